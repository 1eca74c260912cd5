"""Where a prompt set comes from: the matrix's `prompts` string, parsed, and the file it names.

    prompts = "default"                                    # a set shipped in specsweep/prompts/
    prompts = "mine.toml"                                  # a file, relative to the matrix
    prompts = "spec-bench:data/question.jsonl"             # Spec-Bench's question file
    prompts = "hf://datasets/OWNER/NAME/FILE"              # a file of a Hugging Face dataset repo
    prompts = "hf://datasets/OWNER/NAME@REVISION/FILE"     # ... at a branch, tag or commit
    prompts = "spec-bench:hf://datasets/OWNER/NAME/FILE?per_kind=5"

The format is TOML (`[[prompt]]` entries) unless the string starts with `spec-bench:` or the
file name ends in `.jsonl` (one JSON object per line). `?per_kind=N` keeps the first N prompts
of each kind, in file order. `hf://` follows huggingface_hub's own URL form (HfFileSystem); the
file goes through `hf_hub_download` into the standard Hugging Face cache, so HF_HOME /
HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE hold, and once cached it is read offline.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from specsweep.errors import SpecsweepError

SHIPPED = Path(__file__).resolve().parent.parent / "prompts"
SPEC_BENCH = "spec-bench:"
OPTIONS = ("per_kind",)
# huggingface_hub's HfFileSystem form; a revision with a slash is written %2F (refs%2Fpr%2F1)
_HF = re.compile(r"hf://datasets/(?P<repo>[^/@?]+/[^/@?]+)(?:@(?P<rev>[^/]+))?/(?P<file>[^?]+)")


@dataclass(frozen=True)
class Source:
    text: str  # as the matrix writes it
    location: str  # a shipped name, a path relative to the matrix, or an hf:// URL without its revision
    format: str  # "toml" or "jsonl"
    prefix: str = ""  # "spec-bench:" when written
    per_kind: int = 0  # 0: every prompt
    repo: str | None = None  # hf:// only
    file: str | None = None
    revision: str | None = None

    @property
    def set_name(self) -> str:
        """The set part of every prompt id. Options and the revision stay out of it: raising
        `per_kind` or pinning a revision keeps the ids of the prompts already measured (a prompt
        whose text changed still gets a new id, from its text hash)."""
        return self.prefix + self.location


def parse(text: str) -> Source:
    body, sep, query = text.partition("?")
    where = f"prompts {text!r}"
    per_kind = _options(query, where) if sep else 0
    prefix = SPEC_BENCH if body.startswith(SPEC_BENCH) else ""
    location = body[len(prefix):]
    if not location:
        raise SpecsweepError(f"{where}: no file named")
    fmt = "jsonl" if prefix or location.endswith(".jsonl") else "toml"
    if not location.startswith("hf://"):
        return Source(text, location, fmt, prefix, per_kind)
    m = _HF.fullmatch(location)
    if not m or m["file"].endswith("/"):
        raise SpecsweepError(f"{where}: expected hf://datasets/OWNER/NAME/FILE or "
                             f"hf://datasets/OWNER/NAME@REVISION/FILE (dataset repos only)")
    repo, file = m["repo"], m["file"]
    return Source(text, f"hf://datasets/{repo}/{file}", fmt, prefix, per_kind, repo, file,
                  unquote(m["rev"]) if m["rev"] else None)


def _options(query: str, where: str) -> int:
    per_kind = 0
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if key not in OPTIONS or not eq:
            raise SpecsweepError(f"{where}: unknown option {item!r} (options: per_kind=N)")
        if not value.isdigit() or int(value) < 1:
            raise SpecsweepError(f"{where}: per_kind must be a whole number >= 1, not {value!r}")
        per_kind = int(value)
    return per_kind


@dataclass(frozen=True)
class Located:
    """The set's file on disk, and how to reach a file beside it (a TOML entry's `file`)."""
    path: Path
    where: str  # how errors name the set: the local path or the hf:// URL
    source: Source

    def sibling(self, rel: str, matrix_path: Path) -> Path:
        if self.source.repo is None:
            return self.path.parent / rel
        file = posixpath.normpath(posixpath.join(posixpath.dirname(self.source.file), rel))
        return hub_file(self.source, file, matrix_path)


def locate(source: Source, matrix_path: Path) -> Located:
    if source.repo is not None:
        return Located(hub_file(source, source.file, matrix_path), source.location, source)
    shipped = SHIPPED / f"{source.location}.toml"
    if not source.prefix and source.format == "toml" and shipped.is_file():
        return Located(shipped, str(shipped), source)
    path = matrix_path.parent / source.location
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.toml")))
        raise SpecsweepError(f"prompt set {source.text!r} not found (shipped: {names}; or a file next to the "
                             f"matrix: {path})")
    return Located(path, str(path), source)


# ----------------------------------------------------------------------------------------------
# hf:// through huggingface_hub (imported here: it is slow to import and most runs do not need it)

_fetched: dict[tuple, Path] = {}  # one Hub request per file and process, not one per cell


def hub_file(source: Source, file: str, matrix_path: Path) -> Path:
    from huggingface_hub import constants, hf_hub_download

    from specsweep.models.hub_retry import retrying

    key = (source.repo, file, source.revision, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)
    if key not in _fetched:  # a 5xx or a cut connection is tried again, as a model's download is
        _fetched[key] = Path(retrying(
            f"prompt set {source.location}",
            lambda: hf_hub_download(source.repo, file, repo_type="dataset", revision=source.revision),
            lambda e, tries: _hub_error(source, file, matrix_path, e, tries)))
    return _fetched[key]


def _hub_error(source: Source, file: str, matrix_path: Path, e: Exception, tries: int = 1) -> SpecsweepError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    at = source.revision or "main"
    head = f"prompt set {source.location}"
    fetch = (f"fetch it where the Hub is reachable (same HF_HOME): specsweep run {matrix_path} --dry-run, or "
             f"hf download --repo-type dataset {source.repo} {file}" + (f" --revision {at}" if source.revision else ""))
    if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub ({constants.ENDPOINT}) is unreachable"
        return SpecsweepError(f"{head}: {file} at {at} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                              f"and {why}; {fetch}")
    if isinstance(e, GatedRepoError):
        return SpecsweepError(f"{head}: {source.repo} is gated: accept its terms on huggingface.co and set HF_TOKEN")
    if isinstance(e, RepositoryNotFoundError):
        return SpecsweepError(f"{head}: dataset {source.repo} not found on the Hub (private? set HF_TOKEN)")
    if isinstance(e, RevisionNotFoundError):
        return SpecsweepError(f"{head}: revision {at} of {source.repo} does not exist")
    if isinstance(e, EntryNotFoundError):
        return SpecsweepError(f"{head}: {file} is not in dataset {source.repo} at {at}")
    tried = f" ({tries} tries)" if tries > 1 else ""
    if isinstance(e, HfHubHTTPError) and e.response is not None:
        return SpecsweepError(f"{head}: the Hub answered HTTP {e.response.status_code} for {source.repo}/{file}{tried}")
    detail = " ".join(str(e).split())[:160] or type(e).__name__
    return SpecsweepError(f"{head}: {type(e).__name__}: {detail}{tried}")
