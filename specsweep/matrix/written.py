"""Matrices specsweep writes for itself (`probe --calibrate`, `tune`) beside their records."""

from __future__ import annotations

import json
from pathlib import Path


def settings_lines(settings: dict) -> list[str]:
    """`key = value` lines: JSON's strings, numbers, booleans and arrays of them are TOML's too."""
    return [f"{k} = {json.dumps(v)}" for k, v in settings.items()]


def write_if_changed(path: Path, text: str) -> Path:
    """Written only when the text changed: a resumed run finds its own matrix untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path
