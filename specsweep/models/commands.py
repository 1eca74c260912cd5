"""`specsweep fetch`, `specsweep lock` and `specsweep models`: the models.lock commands."""

from __future__ import annotations

from pathlib import Path

import click

from specsweep.models import lockfile
from specsweep.models.lockfile import LockEntry

# huggingface_hub is imported inside the commands (`from specsweep.models import hub`): it takes a
# third of a second, which every other specsweep command would otherwise pay at start-up.

_lock_option = click.option(
    "--lock", "lock_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The lock file (default: $SPECSWEEP_LOCK, else this checkout's models.lock).")


def _unverified(e: LockEntry) -> str:
    return f"unverified: {', '.join(e.unverified)}" if e.unverified else "verified"


def _selected(lock: lockfile.Lock, names) -> list[LockEntry]:
    return [lock.get(n) for n in names] if names else list(lock.entries)  # unknown names fail before any work


@click.command("fetch")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@_lock_option
@click.option("--force", is_flag=True, help="Download again even when cached (replaces a corrupt copy).")
def fetch(names, lock_path, force):
    """Download models.lock models into the Hugging Face cache and verify their sha256 and size.

    NAME is a models.lock name (all models when none is given). The cache, token and offline mode
    are huggingface_hub's: HF_HOME / HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE. A DFlash drafter is
    converted from its safetensors into a GGUF in specsweep's cache, with the tokenizer of the
    target GGUF its lock entry names (fetched too). Prints one line per model: its name and the
    file llama.cpp loads.
    """
    from specsweep.models import hub
    from specsweep.models.resolve import convert_locked

    lock = lockfile.load(lock_path)
    for e in _selected(lock, names):
        if "revision" in e.unverified:
            hub.echo(f"{e.name}: revision {e.revision} is not pinned yet (unverified); "
                     f"`specsweep lock --update {e.name}` pins it")
        if e.role == "dflash":  # safetensors: converted in process into the GGUF llama.cpp loads
            click.echo(f"{e.name}\t{convert_locked(e, lock, force=force)}")
            continue
        paths = hub.fetch_files(e, force=force)
        click.echo(f"{e.name}\t{paths[0]}")


@click.command("lock")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@_lock_option
@click.option("--update", is_flag=True,
              help="Ask the Hub (file metadata) for each entry's commit, sha256 and size and record them; "
                   "record the vocabulary fingerprint of files already fetched.")
@click.option("--latest", is_flag=True, help="With --update: move the entries to the newest commit of main.")
def lock(names, lock_path, update, latest):
    """Check models.lock, or with --update fill its unverified facts from the Hub."""
    lk = lockfile.load(lock_path)
    entries = _selected(lk, names)
    if latest and not update:
        raise click.UsageError("--latest goes with --update")
    if not update:
        for e in entries:
            click.echo(f"{e.name}\t{e.role}\t{e.repo}@{e.revision[:12]}\t{e.file}"
                       + (f" (+{len(e.files) - 1} files)" if len(e.files) > 1 else "") + f"\t{_unverified(e)}")
        return
    from specsweep.models import hub
    from specsweep.models.update import update_entry

    for e in entries:
        new, notes = update_entry(e, latest=latest)
        lk = lk.replace_entry(new)
        lockfile.save(lk)  # after each entry, atomically: an error later keeps what was learnt
        click.echo(f"{new.name}\t{new.repo}@{new.revision[:12]}\t{_unverified(new)}")
        for n in notes:
            hub.echo(n)


@click.command("models")
@_lock_option
def models(lock_path):
    """List models.lock with what is in the local Hugging Face cache."""
    from specsweep.models import hub
    from specsweep.models.resolve import converted_path

    lk = lockfile.load(lock_path)
    click.echo(f"# {lk.path}; Hugging Face cache {hub.cache_root()}")
    rows = [("name", "role", "size", "local", "repo/file", "facts")]
    for e in lk.entries:
        rows.append((e.name, e.role, hub.gib(e.total_size) if e.total_size else "?", _local(e, converted_path),
                     f"{e.repo}/{e.file}" + (f" (+{len(e.files) - 1})" if len(e.files) > 1 else ""),
                     _unverified(e)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


def _local(e: LockEntry, converted_path) -> str:
    from specsweep.models import hub

    if e.role == "dflash":
        if converted_path(e).is_file():
            return "converted"
    found = [hub.cached_file(e.repo, f.file, e.revision) for f in e.files]
    have = [(f, p) for f, p in zip(e.files, found) if p is not None]
    if not have:
        return "missing"
    if any(f.size is not None and p.stat().st_size != f.size for f, p in have):
        return "cached, size differs"
    if len(have) < len(e.files):
        return f"partial {len(have)}/{len(e.files)}"
    return "cached" if e.role != "dflash" else "cached, not converted"
