"""A models.lock name -> the GGUF file llama.cpp loads, for the matrix runner.

`resolve_locked(name)` returns the cached file (the first shard of a split GGUF), verified against
the lock's size and sha256; a missing file is fetched, or, when the Hub cannot be used, refused
with the `specsweep fetch NAME` command to run where it can. A DFlash drafter resolves to the GGUF
converted from its safetensors (see `converted_path`).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.matrix.models import cache_dir
from specsweep.models import hub, lockfile
from specsweep.models.lockfile import LockEntry


def converted_path(entry: LockEntry) -> Path:
    """Where the GGUF converted from a DFlash drafter's safetensors is expected."""
    return cache_dir().parent / "converted" / entry.name / entry.convert["output"]


def convert_command(entry: LockEntry) -> str:
    """The llama.cpp conversion the lock records for a DFlash drafter, with this machine's paths."""
    c = entry.convert
    src = hub.cache_root() / f"models--{entry.repo.replace('/', '--')}" / "snapshots" / entry.revision
    tgt = hub.cache_root() / f"models--{c['target_repo'].replace('/', '--')}" / "snapshots" / \
        c.get("target_revision", "main")
    argv = ["python", c["tool"], str(src), "--target-model-dir", str(tgt), *c.get("args", []),
            "--outfile", str(converted_path(entry))]
    return " ".join(shlex.quote(a) for a in argv)


def resolve_locked(name: str, fetch: bool = True, lock_path: Path | None = None) -> Path:
    """The verified cached GGUF of a models.lock entry, fetched when missing and `fetch` is true.

    With `fetch=False` a missing file gives the path it will have (which does not exist yet)."""
    entry = lockfile.load(lock_path).get(name)
    if entry.role == "dflash":
        path = converted_path(entry)
        if path.is_file() or not fetch:
            return path
        raise SpecsweepError(f"model {name}: the DFlash drafter is safetensors; `specsweep fetch {name}` "
                             f"downloads it, then convert it with llama.cpp: {convert_command(entry)}")

    cached = [hub.cached_file(entry.repo, f.file, entry.revision) for f in entry.files]
    if all(cached):
        for f, path in zip(entry.files, cached):
            hub.verify(entry, f, path, full=False)
        return cached[0]
    if not fetch:
        return cached[0] or (hub.cache_root() / f"models--{entry.repo.replace('/', '--')}" / "snapshots"
                             / entry.revision / entry.file)
    if hub.offline():
        raise hub.HubUnreachable(f"model {name} is not in the Hugging Face cache ({hub.cache_root()}) and "
                                 f"HF_HUB_OFFLINE is set; run: specsweep fetch {name}")
    return hub.fetch_files(entry, progress=True)[0]
