"""`specsweep lock --update`: fill a lock entry's unverified facts from the Hub.

For every file of an entry it asks the Hub for the file's metadata at the entry's revision
(`get_hf_file_metadata`): the commit the revision points to, the size, and for LFS/Xet files the
sha256 (their etag); a small plain-git file (a config.json) is downloaded and hashed instead. The
vocabulary fingerprint needs the GGUF's header, so it is recorded only when the file is already in
the cache (after `specsweep fetch`) and matches the new sha256.

A fact the lock already holds as verified is never overwritten: a difference is reported as a
change upstream. `--latest` moves an entry to the newest commit of `main` and takes every fact anew.
"""

from __future__ import annotations

from dataclasses import replace

from specsweep.errors import SpecsweepError
from specsweep.models import hub
from specsweep.models.hashing import file_sha256
from specsweep.models.lockfile import FACTS, LockedFile, LockEntry
from specsweep.models.vocab_match import fingerprint, read_vocab


def update_entry(entry: LockEntry, latest: bool = False) -> tuple[LockEntry, list[str]]:
    """The entry with its facts from the Hub, and notes on what is still unverified."""
    notes = []
    revision = "main" if latest else entry.revision
    keep = set() if latest else {f for f in FACTS if f not in entry.unverified}

    files, commit = [], None
    for i, f in enumerate(entry.files):
        r = hub.remote(entry.name, entry.repo, f.file, commit or revision)
        commit = commit or r.commit
        sha = r.sha256
        if sha is None:  # not an LFS/Xet file: its etag is a git sha1, so hash the file itself
            sha = file_sha256(hub.download(entry.name, entry.repo, f.file, commit), use_memo=False)
        new = LockedFile(f.file, sha, r.size)
        for fact, old_v, new_v in (("sha256", f.sha256, new.sha256), ("size", f.size, new.size)):
            if fact in keep and old_v is not None and new_v is not None and old_v != new_v:
                raise SpecsweepError(f"model {entry.name}: {f.file} changed upstream: the Hub has {fact} {new_v} at "
                                     f"{commit}, models.lock's verified {fact} is {old_v}; "
                                     f"`specsweep lock --update --latest {entry.name}` takes the new file")
        files.append(new)

    if "revision" in keep and commit != entry.revision:
        raise SpecsweepError(f"model {entry.name}: revision {entry.revision} resolves to {commit} on the Hub")

    unverified = set(entry.unverified) - {"file"}
    if latest:
        unverified |= {"vocab"}
    unverified.discard("revision")  # hub.remote refuses an answer without X-Repo-Commit
    if all(f.sha256 for f in files):
        unverified.discard("sha256")
    if all(f.size for f in files):
        unverified.discard("size")

    convert = entry.convert
    if convert is not None and (latest or len(convert.get("target_revision", "")) != 40):
        target_files = convert.get("target_files") or ["config.json"]
        r = hub.remote(entry.name, convert["target_repo"], target_files[0], "main" if latest else
                       convert.get("target_revision", "main"))
        convert = dict(convert, target_revision=r.commit)

    vocab = entry.vocab
    updated = replace(entry, revision=commit or entry.revision, files=tuple(files), convert=convert)
    fresh = _vocab_from_cache(updated)
    if fresh is not None:
        if "vocab" in keep and vocab and vocab.get("tokens_sha256") not in (None, fresh["tokens_sha256"]):
            raise SpecsweepError(f"model {entry.name}: the cached file's vocabulary differs from the verified "
                                 f"fingerprint in models.lock")
        vocab = fresh
        unverified.discard("vocab")
    elif "vocab" in unverified:
        notes.append(f"{entry.name}: vocabulary unverified: `specsweep fetch {entry.name}` (and for a DFlash "
                     f"drafter its conversion), then `specsweep lock --update {entry.name}` records it")
    return replace(updated, vocab=vocab, unverified=tuple(f for f in FACTS if f in unverified)), notes


def _vocab_from_cache(entry: LockEntry) -> dict | None:
    if entry.role == "dflash":
        from specsweep.models.resolve import converted_path

        path = converted_path(entry)
        return fingerprint(read_vocab(path, entry.name)) if path.is_file() else None
    f = entry.files[0]
    path = hub.cached_file(entry.repo, f.file, entry.revision)
    if path is None or (f.size is not None and path.stat().st_size != f.size):
        return None
    if f.sha256 is not None and file_sha256(path) != f.sha256:
        return None
    return fingerprint(read_vocab(path, entry.name))
