"""models.lock: the Hugging Face models specsweep fetches, pinned by revision, sha256 and size.

The lock is TOML, read with tomllib and written back by `dump` in one fixed layout (tomllib cannot
write, and a fixed layout keeps `specsweep lock --update` diffs to the facts that changed):

    version = 1

    [[model]]
    name = "qwen3.5-0.8b-q4_k_m"          # what matrices and `specsweep fetch` call it
    role = "draft"                         # target | draft | dflash
    repo = "unsloth/Qwen3.5-0.8B-GGUF"
    revision = "<40-hex commit sha>"
    file = "Qwen3.5-0.8B-Q4_K_M.gguf"      # one file: file, sha256, size
    sha256 = "<64 hex>"
    size = 123
    vocab = { tokenizer = "gpt2", pre = "qwen35", n_tokens = 248320, tokens_sha256 = "<64 hex>" }
    override_kv = ["tokenizer.ggml.bos_token_id=int:248044"]   # optional: llama.cpp's --override-kv
    unverified = []                        # facts not checked against the Hub (see below)
    note = "free text, kept across rewrites"

`vocab.defaulted` lists the special-token ids ("bos", "eos") the file does not set (or sets outside
the vocabulary), so that llama.cpp falls back on its default for the tokenizer type (BPE: 11).
`override_kv` is what every load of the file gets (specsweep.models.overrides); a matrix can add
to it per model.

A split GGUF lists every shard, first shard first:
    files = [{ file = "X-00001-of-00002.gguf", sha256 = "...", size = 1 }, { file = "X-00002-of-00002.gguf", ... }]
A DFlash drafter (safetensors) lists its files and a `[model.convert]` table: `target_gguf`, the
lock name of the target GGUF whose tokenizer the drafter takes when `specsweep fetch` converts it
in process (specsweep.models.dflash_convert), and how llama.cpp's convert_hf_to_gguf.py would do it
(tool, target_repo/target_revision/target_files, args), the route for checkpoints that need torch.

`unverified` names the facts nobody has checked against the Hub yet: "file", "revision", "sha256",
"size", "vocab". An unverified revision may be a branch name ("main"); an unverified sha256 or size
may be absent. `specsweep lock --update` asks the Hub (huggingface_hub file metadata) and fills them.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from specsweep.errors import SpecsweepError, read_text
from specsweep.models.overrides import parse_overrides

LOCK_VERSION = 1
ROLES = ("target", "draft", "dflash")
FACTS = ("file", "revision", "sha256", "size", "vocab")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHARD = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")

_ENTRY_KEYS = {"name", "role", "repo", "revision", "file", "sha256", "size", "files", "vocab", "unverified", "note",
               "convert", "override_kv"}
_FILE_KEYS = {"file", "sha256", "size"}
_VOCAB_KEYS = {"tokenizer": str, "pre": str, "n_tokens": int, "tokens_sha256": str, "bos": int, "eos": int,
               "add_bos": bool, "add_eos": bool, "defaulted": list}
_DEFAULTED = ("bos", "eos")
_CONVERT_KEYS = {"tool": str, "llama_cpp": str, "target_repo": str, "target_revision": str, "target_files": list,
                 "args": list, "output": str, "target_gguf": str}


@dataclass(frozen=True)
class LockedFile:
    file: str  # path inside the repository
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class LockEntry:
    name: str
    role: str
    repo: str
    revision: str
    files: tuple[LockedFile, ...]
    vocab: dict | None = None  # the vocabulary fingerprint (see specsweep.models.vocab_match)
    unverified: tuple[str, ...] = ()
    note: str = ""
    convert: dict | None = None  # DFlash drafters: how the safetensors become a GGUF
    override_kv: tuple[str, ...] = ()  # KEY=TYPE:VALUE, as written (specsweep.models.overrides)

    @property
    def file(self) -> str:
        """The file llama.cpp is given: the only file, or the first shard of a split GGUF."""
        return self.files[0].file

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1 and _SHARD.match(self.files[0].file) is not None

    @property
    def pinned(self) -> bool:
        return _COMMIT.match(self.revision) is not None

    def is_verified(self, fact: str) -> bool:
        return fact not in self.unverified

    @property
    def total_size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)


@dataclass(frozen=True)
class Lock:
    path: Path
    entries: tuple[LockEntry, ...] = field(default=())

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> LockEntry:
        for e in self.entries:
            if e.name == name:
                return e
        known = ", ".join(self.names()) or "none"
        raise SpecsweepError(f"unknown model {name!r}: not in {self.path} (known: {known})")

    def replace_entry(self, entry: LockEntry) -> "Lock":
        return replace(self, entries=tuple(entry if e.name == entry.name else e for e in self.entries))


def default_lock_path() -> Path:
    """$SPECSWEEP_LOCK, else the models.lock of this checkout, else ./models.lock."""
    env = os.environ.get("SPECSWEEP_LOCK")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "models.lock"
    return beside if beside.is_file() else Path("models.lock")


def load(path: Path | None = None) -> Lock:
    path = Path(path) if path is not None else default_lock_path()
    return parse(read_text(path, "lock file"), path)


def parse(text: str, path: Path) -> Lock:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecsweepError(f"{path}: malformed TOML: {e}") from None
    extra = set(data) - {"version", "model"}
    if extra:
        raise SpecsweepError(f"{path}: unknown top-level key(s) {', '.join(sorted(extra))} (expected version, [[model]])")
    if data.get("version", LOCK_VERSION) != LOCK_VERSION:
        raise SpecsweepError(f"{path}: lock version {data.get('version')!r} is not supported (expected {LOCK_VERSION})")
    models = data.get("model", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise SpecsweepError(f"{path}: models must be [[model]] tables")
    entries, seen = [], set()
    for i, raw in enumerate(models):
        entry = _entry(raw, f"{path}: [[model]] #{i + 1}", path)
        if entry.name in seen:
            raise SpecsweepError(f"{path}: model {entry.name}: listed twice")
        seen.add(entry.name)
        entries.append(entry)
    return Lock(path, tuple(entries))


def _entry(raw: dict, where: str, path: Path) -> LockEntry:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecsweepError(f"{where}: name must be lower-case letters, digits, '.', '_' or '-', got {name!r}")
    where = f"{path}: model {name}"
    extra = set(raw) - _ENTRY_KEYS
    if extra:
        raise SpecsweepError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")

    unverified = raw.get("unverified", [])
    if not isinstance(unverified, list) or any(u not in FACTS for u in unverified):
        raise SpecsweepError(f"{where}: unverified must list facts among {', '.join(FACTS)}, got {unverified!r}")
    unverified = tuple(f for f in FACTS if f in unverified)

    role = raw.get("role")
    if role not in ROLES:
        raise SpecsweepError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    repo = raw.get("repo")
    if not isinstance(repo, str) or not _REPO.match(repo):
        raise SpecsweepError(f"{where}: repo must be a Hugging Face repository 'owner/name', got {repo!r}")

    revision = raw.get("revision")
    if revision is None:
        raise SpecsweepError(f"{where}: no revision; pin the commit sha (`specsweep lock --update {name}` "
                             f"records it), or write revision = \"main\" and list \"revision\" under unverified")
    if not isinstance(revision, str) or not revision:
        raise SpecsweepError(f"{where}: revision must be a commit sha, got {revision!r}")
    if "revision" not in unverified and not _COMMIT.match(revision):
        raise SpecsweepError(f"{where}: revision {revision!r} is not a 40-hex commit sha; a branch name is only "
                             f"allowed when \"revision\" is listed under unverified")

    files = _files(raw, where, unverified)
    vocab = _vocab(raw.get("vocab"), where, unverified, role)
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise SpecsweepError(f"{where}: note must be a string")
    convert = raw.get("convert")
    if role == "dflash":
        convert = _convert(convert, where)
    elif convert is not None:
        raise SpecsweepError(f"{where}: only a dflash entry has a [model.convert] table")
    override_kv = tuple(o.text for o in parse_overrides(raw.get("override_kv", []), where))
    return LockEntry(name, role, repo, revision, files, vocab, unverified, note, convert, override_kv)


def _files(raw: dict, where: str, unverified: tuple[str, ...]) -> tuple[LockedFile, ...]:
    if "files" in raw:
        if any(k in raw for k in ("file", "sha256", "size")):
            raise SpecsweepError(f"{where}: give either file/sha256/size or files = [...], not both")
        items = raw["files"]
        if not isinstance(items, list) or not items or not all(isinstance(f, dict) for f in items):
            raise SpecsweepError(f"{where}: files must be a non-empty list of {{ file = ..., sha256 = ..., size = ... }}")
    elif "file" in raw:
        items = [{k: raw[k] for k in ("file", "sha256", "size") if k in raw}]
    else:
        raise SpecsweepError(f"{where}: no file")

    files = []
    for item in items:
        extra = set(item) - _FILE_KEYS
        if extra:
            raise SpecsweepError(f"{where}: unknown file key(s) {', '.join(sorted(extra))}")
        files.append(_file(item, where, unverified))

    first = _SHARD.match(files[0].file)
    if first and len(files) == 1 and int(first["count"]) > 1:
        if "sha256" in unverified and "size" in unverified and files[0].sha256 is None and files[0].size is None:
            # the shard names follow from the first; their hashes come with `lock --update`
            count = int(first["count"])
            files = [LockedFile(f"{first['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
        else:
            raise SpecsweepError(f"{where}: {files[0].file} is shard 1 of {int(first['count'])}: list every shard "
                                 f"with its sha256 and size in files = [...]")
    shards = [_SHARD.match(f.file) for f in files]
    if any(shards):
        stems = {(m["stem"], m["count"]) if m else None for m in shards}
        count = int(shards[0]["count"]) if shards[0] else 0
        expected = [f"{shards[0]['stem']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)] if count else []
        if len(stems) != 1 or [f.file for f in files] != expected:
            raise SpecsweepError(f"{where}: a split GGUF must list shards 00001..N of one file in order, got "
                                 f"{', '.join(f.file for f in files)}")
    if len({f.file for f in files}) != len(files):
        raise SpecsweepError(f"{where}: a file is listed twice")
    return tuple(files)


def _file(item: dict, where: str, unverified: tuple[str, ...]) -> LockedFile:
    name = item.get("file")
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/") or "\\" in name:
        raise SpecsweepError(f"{where}: file must be a relative path inside the repository, got {name!r}")
    sha = item.get("sha256")
    if sha is None:
        if "sha256" not in unverified:
            raise SpecsweepError(f"{where}: {name}: no sha256 (list \"sha256\" under unverified until "
                                 f"`specsweep lock --update` records it)")
    elif not isinstance(sha, str) or not _SHA256.match(sha):
        raise SpecsweepError(f"{where}: {name}: sha256 must be 64 lower-case hex digits, got {sha!r}")
    size = item.get("size")
    if size is None:
        if "size" not in unverified:
            raise SpecsweepError(f"{where}: {name}: no size (list \"size\" under unverified until "
                                 f"`specsweep lock --update` records it)")
    elif not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise SpecsweepError(f"{where}: {name}: size must be a positive number of bytes, got {size!r}")
    return LockedFile(name, sha, size)


def _vocab(vocab, where: str, unverified: tuple[str, ...], role: str) -> dict | None:
    if vocab is None:
        if "vocab" not in unverified:
            raise SpecsweepError(f"{where}: no vocab fingerprint (list \"vocab\" under unverified until "
                                 f"`specsweep lock --update` records it from the fetched file)")
        return None
    if not isinstance(vocab, dict):
        raise SpecsweepError(f"{where}: vocab must be a table {{ tokenizer = ..., pre = ..., n_tokens = ..., ... }}")
    for key, value in vocab.items():
        kind = _VOCAB_KEYS.get(key)
        if kind is None:
            raise SpecsweepError(f"{where}: unknown vocab key {key!r} (expected: {', '.join(_VOCAB_KEYS)})")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SpecsweepError(f"{where}: vocab {key} = {value!r} has the wrong type")
    if any(d not in _DEFAULTED for d in vocab.get("defaulted", [])):
        raise SpecsweepError(f"{where}: vocab defaulted lists special tokens among {', '.join(_DEFAULTED)}, "
                             f"got {vocab['defaulted']!r}")
    for key in ("tokenizer", "n_tokens"):
        if key not in vocab:
            raise SpecsweepError(f"{where}: vocab has no {key}")
    if "tokens_sha256" in vocab:
        if not _SHA256.match(vocab["tokens_sha256"]):
            raise SpecsweepError(f"{where}: vocab tokens_sha256 must be 64 lower-case hex digits")
    elif "vocab" not in unverified:
        raise SpecsweepError(f"{where}: vocab has no tokens_sha256 (list \"vocab\" under unverified until it is "
                             f"recorded)")
    return dict(vocab)


def _convert(convert, where: str) -> dict:
    if not isinstance(convert, dict):
        raise SpecsweepError(f"{where}: a dflash entry needs a [model.convert] table (how llama.cpp converts it)")
    for key, value in convert.items():
        kind = _CONVERT_KEYS.get(key)
        if kind is None:
            raise SpecsweepError(f"{where}: unknown convert key {key!r} (expected: {', '.join(_CONVERT_KEYS)})")
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise SpecsweepError(f"{where}: convert {key} = {value!r} has the wrong type")
    for key in ("tool", "target_repo", "output"):
        if key not in convert:
            raise SpecsweepError(f"{where}: [model.convert] has no {key}")
    if not _REPO.match(convert["target_repo"]):
        raise SpecsweepError(f"{where}: convert target_repo must be 'owner/name'")
    if "/" in convert["output"] or not convert["output"].endswith(".gguf"):
        raise SpecsweepError(f"{where}: convert output must be a .gguf file name")
    if "target_gguf" in convert and not _NAME.match(convert["target_gguf"]):
        raise SpecsweepError(f"{where}: convert target_gguf must name a model of this lock, got {convert['target_gguf']!r}")
    return dict(convert)


# ----------------------------------------------------------------------------------------------
# writing: one fixed layout

HEADER = """\
# models.lock: the Hugging Face models specsweep fetches, pinned by revision, sha256 and size.
# Written by `specsweep lock --update`; edit by hand if you like, the layout is restored on the next update.
# `unverified` lists facts nobody has checked against the Hub yet (file, revision, sha256, size, vocab);
# `specsweep lock --update` fills them on a machine with internet, `specsweep fetch` refuses a file
# whose sha256 or size differs from a verified one.
"""


def _str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot write {v!r} to TOML")


_VOCAB_ORDER = list(_VOCAB_KEYS)
_CONVERT_ORDER = list(_CONVERT_KEYS)


def dump(lock: Lock) -> str:
    lines = [HEADER, f"version = {LOCK_VERSION}"]
    for e in lock.entries:
        lines += ["", "[[model]]", f"name = {_str(e.name)}", f"role = {_str(e.role)}", f"repo = {_str(e.repo)}",
                  f"revision = {_str(e.revision)}"]
        if len(e.files) == 1:
            f = e.files[0]
            lines.append(f"file = {_str(f.file)}")
            if f.sha256 is not None:
                lines.append(f"sha256 = {_str(f.sha256)}")
            if f.size is not None:
                lines.append(f"size = {f.size}")
        else:
            lines.append("files = [")
            for f in e.files:
                d = {"file": f.file} | ({"sha256": f.sha256} if f.sha256 else {}) | ({"size": f.size} if f.size else {})
                lines.append(f"    {_value(d)},")
            lines.append("]")
        if e.vocab is not None:
            lines.append(f"vocab = {_value({k: e.vocab[k] for k in _VOCAB_ORDER if k in e.vocab})}")
        if e.override_kv:
            lines.append(f"override_kv = {_value(list(e.override_kv))}")
        lines.append(f"unverified = {_value(list(e.unverified))}")
        if e.note:
            lines.append(f"note = {_str(e.note)}")
        if e.convert is not None:
            lines.append("")
            lines.append("[model.convert]")
            lines += [f"{k} = {_value(e.convert[k])}" for k in _CONVERT_ORDER if k in e.convert]
    return "\n".join(lines) + "\n"


def save(lock: Lock) -> None:
    """Write the lock atomically: a temporary file beside it, renamed over it when complete."""
    text = dump(lock)
    parse(text, lock.path)  # never write a lock that would not load
    tmp = lock.path.with_name(f".{lock.path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, lock.path)
    except OSError as e:
        raise SpecsweepError(f"{lock.path}: cannot write the lock: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
