"""sha256 of model files, remembered by (real path, size, mtime).

Hashing a 20 GB GGUF takes the better part of a minute, so a digest is kept in the same
`sha256.json` that `specsweep run` keeps for its manifests (under the specsweep cache,
$SPECSWEEP_CACHE or ~/.cache/specsweep). `specsweep fetch` always hashes the file again; resolving a
model for a run trusts the remembered digest of an unchanged file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from specsweep.models import cache


def _cache_path() -> Path:
    return cache.root() / "sha256.json"


def _load() -> dict:
    try:
        data = json.loads(_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(key: str, digest: str) -> None:
    path = _cache_path()
    data = _load()
    data[key] = digest
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=0))
        os.replace(tmp, path)
    except OSError:
        pass  # only a cache
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path: Path, progress: Callable[[int], None] | None = None, use_memo: bool = True) -> str:
    """sha256 of a file; `use_memo=False` hashes it even when an unchanged copy was hashed before."""
    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if use_memo:
        known = _load().get(key)
        if isinstance(known, str):
            return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    digest = h.hexdigest()
    _store(key, digest)
    return digest
