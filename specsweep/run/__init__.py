"""`specsweep run`: cells -> engine -> records, resumable and shardable."""
