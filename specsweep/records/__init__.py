"""Records: what a run measured, as append-only JSON lines under `results/<matrix>/`."""
