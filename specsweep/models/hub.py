"""The Hugging Face Hub side: the standard cache, downloads, and checks against models.lock.

Everything goes through huggingface_hub's public API, so its settings hold: the cache is
HF_HUB_CACHE (default $HF_HOME/hub, `models--owner--name/{blobs,snapshots/<rev>,refs}`), HF_TOKEN
authenticates, HF_HUB_OFFLINE=1 keeps every request off the network, HF_ENDPOINT picks the server.
These are read by huggingface_hub when it is imported.

A download is `hf_hub_download`: it shows a progress bar, writes to a temporary file and renames it
into the cache only when complete (an interrupted download leaves nothing under the real name),
and keeps every finished file, so fetching a split model again resumes at the first missing shard.
Within one file, huggingface_hub 2.x starts an interrupted plain-HTTP download again from the
beginning (its temporary file is process-unique and deleted on failure); Xet-stored files may reuse
hf_xet's chunk cache.

Before downloading, the file's metadata on the Hub (`get_hf_file_metadata`: commit, sha256 etag of
LFS/Xet files, size) is compared with the lock, so a file that changed upstream is reported before
gigabytes move; after it, the file's sha256 and size are checked against the lock.
"""

from __future__ import annotations

import errno
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import huggingface_hub
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

from specsweep.errors import SpecsweepError
from specsweep.models.hashing import file_sha256
from specsweep.models.lockfile import LockedFile, LockEntry

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HubUnreachable(SpecsweepError):
    """The Hub could not be asked (offline mode, no network, Hub down): try again where it can."""


def offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def cache_root() -> Path:
    return Path(constants.HF_HUB_CACHE)


def gib(n: int | None) -> str:
    return "? GiB" if n is None else f"{n / 2**30:.2f} GiB"


def echo(msg: str) -> None:
    click.echo(msg, err=True)


def cached_file(repo: str, file: str, revision: str) -> Path | None:
    """The file in the local cache at this revision (a branch name goes through refs/), or None."""
    found = try_to_load_from_cache(repo, file, revision=revision)
    return Path(found) if isinstance(found, str) else None


# ----------------------------------------------------------------------------------------------
# errors: one line naming the model


def _hub_error(name: str, repo: str, file: str, revision: str, e: Exception) -> SpecsweepError:
    if isinstance(e, OfflineModeIsEnabled):
        return HubUnreachable(f"model {name}: {file} is not in the Hugging Face cache ({cache_root()}) and "
                              f"HF_HUB_OFFLINE is set; run: specsweep fetch {name} where the Hub is reachable "
                              f"(same HF_HOME)")
    if isinstance(e, RevisionNotFoundError):
        return SpecsweepError(f"model {name}: revision {revision} of {repo} does not exist upstream (changed "
                              f"upstream: history rewritten or the branch removed); pin another revision with "
                              f"`specsweep lock --update --latest {name}`")
    if isinstance(e, GatedRepoError):
        return SpecsweepError(f"model {name}: {repo} is gated: accept its terms on huggingface.co and set HF_TOKEN")
    if isinstance(e, RepositoryNotFoundError):
        return SpecsweepError(f"model {name}: repository {repo} not found on the Hub (private? set HF_TOKEN)")
    if isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError):
        return SpecsweepError(f"model {name}: {file} is not in {repo} at {revision} (changed upstream, or "
                              f"models.lock names it wrongly)")
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        code = e.response.status_code
        if code in (401, 403):
            return SpecsweepError(f"model {name}: the Hub refused {repo} (HTTP {code}): set HF_TOKEN to a token "
                                  f"with access")
        if code < 500 and code != 429:
            return SpecsweepError(f"model {name}: the Hub answered HTTP {code} for {repo}/{file}")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return SpecsweepError(f"model {name}: no space left on the device holding {cache_root()} while "
                              f"downloading {file}; nothing was kept, free some space and fetch again")
    detail = " ".join(str(e).split())[:160] or type(e).__name__
    return HubUnreachable(f"model {name}: the Hugging Face Hub is unreachable ({constants.ENDPOINT}: "
                          f"{type(e).__name__}: {detail}); check the network, or run: specsweep fetch {name} "
                          f"where the Hub is reachable (same HF_HOME)")


# every way a Hub request fails: HTTP status errors, connection errors of huggingface_hub's HTTP client,
# OS errors (a full disk while writing the download)
_HUB_ERRORS = (HfHubHTTPError, OfflineModeIsEnabled, EntryNotFoundError, OSError, ConnectionError, TimeoutError,
               getattr(huggingface_hub.errors, "HTTPError", OSError))


@dataclass(frozen=True)
class Remote:
    commit: str | None
    sha256: str | None  # the LFS/Xet etag is the file's sha256; plain git files have a git sha1 etag
    size: int | None


def remote(name: str, repo: str, file: str, revision: str) -> Remote:
    """The file's metadata on the Hub at this revision (one HEAD request)."""
    if offline():
        raise HubUnreachable(f"model {name}: HF_HUB_OFFLINE is set, and this needs the Hub")
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, file, revision=revision))
    except _HUB_ERRORS as e:
        raise _hub_error(name, repo, file, revision, e) from None
    etag = (meta.etag or "").strip('"').lower()
    return Remote(meta.commit_hash, etag if _SHA256.match(etag) else None, meta.size)


def download(name: str, repo: str, file: str, revision: str, force: bool = False) -> Path:
    try:
        return Path(hf_hub_download(repo, file, revision=revision, force_download=force))
    except _HUB_ERRORS as e:
        raise _hub_error(name, repo, file, revision, e) from None


def ensure_disk_space(name: str, file: str, need: int | None) -> None:
    if not need:
        return
    where = cache_root()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise SpecsweepError(f"model {name}: not enough disk space for {file}: it needs {gib(need)}, "
                             f"{where} has {gib(free)} free")


# ----------------------------------------------------------------------------------------------
# verification against the lock


def verify(entry: LockEntry, f: LockedFile, path: Path, full: bool = True, progress: bool = False) -> str:
    """Check a cached file's size and sha256 against the lock; its sha256, or SpecsweepError."""
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        raise SpecsweepError(f"model {entry.name}: {f.file} in the cache is {size} bytes, models.lock says "
                             f"{f.size}: corrupt or changed upstream; `specsweep fetch --force {entry.name}` "
                             f"downloads it again")
    if progress and size > 256 * 2**20:
        with click.progressbar(length=size, label=f"sha256 {Path(f.file).name}", file=sys.stderr) as bar:
            digest = file_sha256(path, bar.update, use_memo=not full)
    else:
        digest = file_sha256(path, use_memo=not full)
    if f.sha256 is not None and digest != f.sha256:
        raise SpecsweepError(f"model {entry.name}: {f.file} fails the sha256 check (models.lock {f.sha256[:16]}..., "
                             f"file {digest[:16]}...): corrupt or changed upstream; `specsweep fetch --force "
                             f"{entry.name}` downloads it again")
    return digest


def _check_remote(entry: LockEntry, f: LockedFile, r: Remote, revision: str) -> None:
    changed = []
    if f.sha256 is not None and r.sha256 is not None and r.sha256 != f.sha256:
        changed.append(f"sha256 {r.sha256[:16]}... (lock {f.sha256[:16]}...)")
    if f.size is not None and r.size is not None and r.size != f.size:
        changed.append(f"size {r.size} (lock {f.size})")
    if changed:
        raise SpecsweepError(f"model {entry.name}: {f.file} changed upstream: the Hub has {', '.join(changed)} at "
                             f"{revision}; if the new file is wanted, `specsweep lock --update {entry.name}` records it")


def _discard(path: Path) -> None:
    """Remove a file this fetch downloaded that failed verification: the pointer and its blob."""
    try:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
    except OSError:
        pass


def fetch_files(entry: LockEntry, files: tuple[LockedFile, ...] | None = None, repo: str | None = None,
                revision: str | None = None, force: bool = False, progress: bool = True,
                note_unverified: bool = True) -> list[Path]:
    """Make every file of an entry present and verified in the cache; their paths, first file first."""
    repo = repo or entry.repo
    revision = revision or entry.revision
    files = files if files is not None else entry.files
    paths = []
    for f in files:
        path = None if force else cached_file(repo, f.file, revision)
        if path is not None:
            verify(entry, f, path, full=True, progress=progress)
            if progress:
                echo(f"{entry.name}: {f.file} cached, {gib(path.stat().st_size)}, verified")
            paths.append(path)
            continue
        if offline() and force:
            raise HubUnreachable(f"model {entry.name}: --force downloads again, and HF_HUB_OFFLINE is set")
        if offline():
            raise HubUnreachable(f"model {entry.name}: {f.file} is not in the Hugging Face cache ({cache_root()}) "
                                 f"and HF_HUB_OFFLINE is set; run: specsweep fetch {entry.name} where the Hub "
                                 f"is reachable (same HF_HOME)")
        r = remote(entry.name, repo, f.file, revision)
        _check_remote(entry, f, r, revision)
        if r.commit and revision != r.commit:
            revision = r.commit  # the rest of a split model comes from the same commit
        blob = cache_root() / f"models--{repo.replace('/', '--')}" / "blobs" / (r.sha256 or f.sha256 or "-")
        if force or not blob.is_file():  # a blob another revision already holds is only linked
            ensure_disk_space(entry.name, f.file, r.size or f.size)
        if progress:
            echo(f"{entry.name}: downloading {repo}/{f.file} ({gib(r.size or f.size)}) at {revision[:12]}")
        path = download(entry.name, repo, f.file, revision, force=force)
        try:
            digest = verify(entry, f, path, full=True, progress=progress)
        except SpecsweepError as e:
            _discard(path)
            raise SpecsweepError(f"{e.message} (the download was removed from the cache)") from None
        if f.sha256 is None and progress and note_unverified:
            echo(f"{entry.name}: {f.file} sha256 {digest} is not in models.lock (unverified); "
                 f"`specsweep lock --update {entry.name}` records the Hub's")
        paths.append(path)
    return paths
