"""The Hugging Face Hub side: the standard cache, downloads, and checks against models.lock.

Everything goes through huggingface_hub's public API, so its settings hold: the cache is
HF_HUB_CACHE (default $HF_HOME/hub, `models--owner--name/{blobs,snapshots/<rev>,refs}`), HF_TOKEN
authenticates, HF_HUB_OFFLINE=1 keeps every request off the network, HF_ENDPOINT picks the server.
These are read by huggingface_hub when it is imported.

A download is `hf_hub_download`: it shows a progress bar on a terminal (none when stderr is not
one, as in CI), writes to a temporary file and renames it into the cache only when complete (an
interrupted download leaves nothing under the sha256's name), and keeps every finished file, so
fetching a split model again resumes at the first missing shard. Within one file (plain HTTP,
huggingface_hub >= 1.20), a body cut mid-way is asked again with `Range` from the last whole
10 MiB chunk written, while bytes keep coming; across processes nothing is resumed: the temporary
file `<etag>.<8 hex>.incomplete` is unique to its process and deleted when the call fails, and
one that a killed fetch left is removed by the next fetch (`remove_orphans`), which starts over.
Xet-stored files go through hf_xet, which may reuse its chunk cache.

huggingface_hub does not retry `get_hf_file_metadata` (the HEAD), and retries a download's GET only
on 408/429; specsweep tries a HEAD or a download that failed for a passing reason (408/429/5xx, a
timeout, a cut body) up to 4 times (hub_retry.py), and reports every failure as one line
(hub_errors.py).

Before downloading, the file's metadata on the Hub (`get_hf_file_metadata`: commit, sha256 etag of
LFS/Xet files, size) is compared with the lock, so a file that changed upstream is reported before
gigabytes move; after it, the file's sha256 and size are checked against the lock, and a download
that fails the check is removed.

Tested over HTTP (tests/test_fetch_http.py, against tests/hub_server.py on 127.0.0.1): the
plain-HTTP path with an LFS redirect to a second host, Range resume, a SIGKILL mid-way, wrong bytes,
401/403/404/500 and timeouts, `lock --update`, and `contribute --push` (preupload + commit of a
small file). Not tested: the hf-xet path that real Hub users of Xet-backed repos take (it needs
Xet's CAS protocol), LFS uploads, and the real Hub itself.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import huggingface_hub
from filelock import FileLock, Timeout
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

from specsweep.errors import SpecsweepError
from specsweep.models.hashing import file_sha256
from specsweep.models.hub_errors import HubUnreachable, describe  # HubUnreachable: also hub.HubUnreachable
from specsweep.models.hub_retry import retrying
from specsweep.models.lockfile import LockedFile, LockEntry

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# a partial download of huggingface_hub >= 1.18: `<etag>.<8 hex>.incomplete`, unique to its process
_ORPHAN = re.compile(r"^([0-9a-f]+)\.[0-9a-f]{8}\.incomplete$")


def offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def cache_root() -> Path:
    return Path(constants.HF_HUB_CACHE)


def repo_cache(repo: str) -> Path:
    """A model repo's folder in the cache (`models--owner--name`), named as huggingface_hub names it."""
    return cache_root() / repo_folder_name(repo_id=repo, repo_type="model")


def gib(n: int | None) -> str:
    return "? GiB" if n is None else f"{n / 2**30:.2f} GiB"


def echo(msg: str) -> None:
    click.echo(msg, err=True)


def cached_file(repo: str, file: str, revision: str) -> Path | None:
    """The file in the local cache at this revision (a branch name goes through refs/), or None."""
    found = try_to_load_from_cache(repo, file, revision=revision)
    return Path(found) if isinstance(found, str) else None


# every way a Hub request fails: HTTP status errors, connection errors of huggingface_hub's HTTP client,
# OS errors (a short body, a full disk while writing the download); anything else is a bug, raised as is
_HUB_ERRORS = (HfHubHTTPError, OfflineModeIsEnabled, EntryNotFoundError, OSError, ConnectionError, TimeoutError,
               getattr(huggingface_hub.errors, "HTTPError", OSError))


def _ask(name: str, repo: str, file: str, revision: str, call):
    """call() with retries; a failure as the one line naming the model."""
    def give_up(e: Exception, tries: int) -> Exception:
        return describe(name, repo, file, revision, e, tries) if isinstance(e, _HUB_ERRORS) else e

    return retrying(f"model {name}: {file}", call, give_up)


@dataclass(frozen=True)
class Remote:
    commit: str  # remote() refuses an answer without X-Repo-Commit
    sha256: str | None  # the LFS/Xet etag is the file's sha256; plain git files have a git sha1 etag
    size: int | None


def remote(name: str, repo: str, file: str, revision: str) -> Remote:
    """The file's metadata on the Hub at this revision (one HEAD request)."""
    if offline():
        raise HubUnreachable(f"model {name}: HF_HUB_OFFLINE is set, and this needs the Hub")
    meta = _ask(name, repo, file, revision, lambda: get_hf_file_metadata(hf_hub_url(repo, file, revision=revision)))
    if meta.commit_hash is None:  # hf_hub_download refuses such an answer too; it is not from a Hub
        raise HubUnreachable(f"model {name}: {constants.ENDPOINT} answered for {repo}/{file} without the Hub's "
                             f"X-Repo-Commit header: not a Hugging Face Hub (a proxy or a captive portal?); "
                             f"check HF_ENDPOINT and the network")
    etag = (meta.etag or "").strip('"').lower()
    return Remote(meta.commit_hash, etag if _SHA256.match(etag) else None, meta.size)


def download(name: str, repo: str, file: str, revision: str, force: bool = False) -> Path:
    return Path(_ask(name, repo, file, revision,
                     lambda: hf_hub_download(repo, file, revision=revision, force_download=force)))


def remove_orphans(repo: str) -> int:
    """Delete the partial downloads that killed fetches left in the repo's blobs/; the bytes freed.

    huggingface_hub writes a download to `<etag>.<8 hex>.incomplete`, unique to its process, and
    deletes it when the call fails, but a SIGKILL or a power cut leaves it behind, never to be reused,
    and it can hold most of a 20 GB file. A download in progress holds huggingface_hub's lock
    `.locks/<repo folder>/<etag>.lock` (flock, released by the kernel when its process dies), so a
    partial file whose lock is free belongs to no running download.
    """
    folder = repo_cache(repo)
    freed = 0
    for tmp in sorted((folder / "blobs").glob("*.incomplete")):
        m = _ORPHAN.match(tmp.name)
        if not m:
            continue
        try:
            with FileLock(str(cache_root() / ".locks" / folder.name / f"{m[1]}.lock"), timeout=0):
                size = tmp.stat().st_size
                tmp.unlink()
                freed += size
        except (Timeout, OSError):  # being downloaded, or not ours to remove
            continue
    return freed


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


def verify(entry: LockEntry, f: LockedFile, path: Path, full: bool = True, progress: bool = False,
           downloaded: bool = False) -> str:
    """Check a cached file's size and sha256 against the lock; its sha256, or SpecsweepError.
    `downloaded`: the file was just downloaded (and is removed by the caller when it fails)."""
    where, why = ("as downloaded", "the bytes were changed on the way (a proxy?) or upstream") if downloaded else \
        ("in the cache", "corrupt or changed upstream")
    fix = (f"the download was removed from the cache; run: specsweep fetch {entry.name} to try again" if downloaded
           else f"`specsweep fetch --force {entry.name}` downloads it again")
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        raise SpecsweepError(f"model {entry.name}: {f.file} {where} is {size} bytes, models.lock says {f.size}: "
                             f"{why}; {fix}")
    if progress and size > 256 * 2**20:
        with click.progressbar(length=size, label=f"sha256 {Path(f.file).name}", file=sys.stderr) as bar:
            digest = file_sha256(path, bar.update, use_memo=not full)
    else:
        digest = file_sha256(path, use_memo=not full)
    if f.sha256 is not None and digest != f.sha256:
        raise SpecsweepError(f"model {entry.name}: {f.file} {where} fails the sha256 check (models.lock "
                             f"{f.sha256[:16]}..., file {digest[:16]}...): {why}; {fix}")
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
        revision = r.commit  # the rest of a split model comes from the same commit
        freed = remove_orphans(repo)
        if freed and progress:
            echo(f"{entry.name}: removed {gib(freed)} of partial downloads that interrupted fetches left in "
                 f"{repo}'s cache (a download starts over)")
        blob = repo_cache(repo) / "blobs" / (r.sha256 or f.sha256 or "-")
        if force or not blob.is_file():  # a blob another revision already holds is only linked
            ensure_disk_space(entry.name, f.file, r.size or f.size)
        if progress:
            echo(f"{entry.name}: downloading {repo}/{f.file} ({gib(r.size or f.size)}) at {revision[:12]}")
        path = download(entry.name, repo, f.file, revision, force=force)
        try:
            digest = verify(entry, f, path, full=True, progress=progress, downloaded=True)
        except SpecsweepError:
            _discard(path)
            raise
        if f.sha256 is None and progress and note_unverified:
            echo(f"{entry.name}: {f.file} sha256 {digest} is not in models.lock (unverified); "
                 f"`specsweep lock --update {entry.name}` records the Hub's")
        paths.append(path)
    return paths
