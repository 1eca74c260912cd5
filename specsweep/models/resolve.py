"""A models.lock name -> the GGUF file llama.cpp loads, for the matrix runner.

`resolve_locked(name)` returns the cached file (the first shard of a split GGUF), verified against
the lock's size and sha256; a missing file is fetched, or, when the Hub cannot be used, refused
with the `specsweep fetch NAME` command to run where it can. A DFlash drafter resolves to the GGUF
converted from its safetensors in process (`convert_locked`), kept in specsweep's cache beside the
synthetic models (`converted_path`): the Hugging Face cache holds what the Hub serves, nothing made
from it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models import cache
from specsweep.models import hub, lockfile
from specsweep.models.lockfile import Lock, LockedFile, LockEntry


def converted_path(entry: LockEntry) -> Path:
    """Where the GGUF converted from a DFlash drafter's safetensors is expected."""
    return cache.root() / "converted" / entry.name / entry.convert["output"]


def convert_command(entry: LockEntry) -> str:
    """The llama.cpp conversion the lock records for a DFlash drafter, with this machine's paths."""
    c = entry.convert
    src = hub.repo_cache(entry.repo) / "snapshots" / entry.revision
    tgt = hub.repo_cache(c["target_repo"]) / "snapshots" / c.get("target_revision", "main")
    argv = ["python", c["tool"], str(src), "--target-model-dir", str(tgt), *c.get("args", []),
            "--outfile", str(converted_path(entry))]
    return " ".join(shlex.quote(a) for a in argv)


def convert_locked(entry: LockEntry, lock: Lock, force: bool = False) -> Path:
    """A DFlash drafter's GGUF: its checkpoint and its target GGUF fetched and verified, converted
    in process (the target's tokenizer), and the result checked against the target from both
    headers. A converted file made from the same snapshot and target is kept."""
    from specsweep.models.dflash_convert import NeedsLlamaCpp, convert
    from specsweep.models.drafter_fit import check_dflash
    from specsweep.models.header import field, open_gguf

    c = entry.convert
    if "target_gguf" not in c:
        raise SpecsweepError(f"model {entry.name}: [model.convert] names no target_gguf (the lock name of the "
                             f"target GGUF whose tokenizer the drafter takes); convert with llama.cpp instead: "
                             f"{convert_command(entry)}")
    target = lock.get(c["target_gguf"])
    if target.role == "dflash":
        raise SpecsweepError(f"model {entry.name}: convert target_gguf {target.name} is itself a DFlash drafter")
    paths = hub.fetch_files(entry, force=force)
    config = next((p for f, p in zip(entry.files, paths) if f.file.rsplit("/", 1)[-1] == "config.json"), None)
    if config is None:
        raise SpecsweepError(f"model {entry.name}: models.lock lists no config.json among its files")
    checkpoint = config.parent
    target_path = hub.fetch_files(target)[0]  # --force is for the drafter; the target is verified
    out = converted_path(entry)
    # the snapshot folder is named by the commit the files came from
    provenance = {"source": f"{entry.repo}@{checkpoint.name}", "target": f"{target.repo}/{target.file}"}
    if out.is_file() and not force:
        try:
            made_from = {k: str(field(open_gguf(out, entry.name), f"specsweep.convert.{k}", "")) for k in provenance}
        except SpecsweepError:
            made_from = {}
        if made_from == provenance:
            hub.echo(f"{entry.name}: converted {out.name} is current ({provenance['source']})")
            check_dflash(target.name, target_path, entry.name, out)
            return out
    out.parent.mkdir(parents=True, exist_ok=True)
    hub.echo(f"{entry.name}: converting {entry.repo} at {checkpoint.name[:12]} to {out} (tokenizer of {target.name})")
    try:
        result = convert(checkpoint, target_path, out, name=entry.repo.split("/")[-1], provenance=provenance,
                         fallback=convert_command(entry))
    except NeedsLlamaCpp:
        # the command it names reads the target's Hugging Face tokenizer and config: fetch them for it
        targets = tuple(LockedFile(f) for f in c.get("target_files", []))
        if targets:
            hub.fetch_files(entry, targets, repo=c["target_repo"], revision=c.get("target_revision", "main"),
                            force=force, note_unverified=False)
        raise
    try:
        check_dflash(target.name, target_path, entry.name, out)
    except SpecsweepError:
        out.unlink()  # a drafter that does not fit its target is not kept under the name runs look for
        raise
    hub.echo(f"{entry.name}: wrote {out.name}: {result.n_tensors} tensors, {result.file_type}, "
             f"{hub.gib(result.n_bytes)} in {result.seconds:.1f} s; header checked against {target.name}")
    return out


def resolve_locked(name: str, fetch: bool = True, lock_path: Path | None = None) -> Path:
    """The verified cached GGUF of a models.lock entry, fetched when missing and `fetch` is true.

    With `fetch=False` a missing file gives the path it will have (which does not exist yet)."""
    lock = lockfile.load(lock_path)
    entry = lock.get(name)
    if entry.role == "dflash":
        path = converted_path(entry)
        if path.is_file() or not fetch:
            return path
        return convert_locked(entry, lock)

    cached = [hub.cached_file(entry.repo, f.file, entry.revision) for f in entry.files]
    if all(cached):
        for f, path in zip(entry.files, cached):
            hub.verify(entry, f, path, full=False)
        return cached[0]
    if not fetch:
        return cached[0] or hub.repo_cache(entry.repo) / "snapshots" / entry.revision / entry.file
    if hub.offline():
        raise hub.HubUnreachable(f"model {name} is not in the Hugging Face cache ({hub.cache_root()}) and "
                                 f"HF_HUB_OFFLINE is set; run: specsweep fetch {name}")
    return hub.fetch_files(entry, progress=True)[0]
