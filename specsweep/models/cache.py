"""specsweep's own cache folder ($SPECSWEEP_CACHE, else ~/.cache/specsweep): synthetic models
(`synth/`), converted drafters (`converted/`) and remembered sha256s (`sha256.json`). Downloads go
to the Hugging Face cache instead, where huggingface_hub keeps them."""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    return Path(os.environ.get("SPECSWEEP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                / "specsweep")


def synth_dir() -> Path:
    """Where synthetic models are kept."""
    return root() / "synth"
