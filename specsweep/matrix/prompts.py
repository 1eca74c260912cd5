"""Prompt sets: the texts each cell is measured on.

A TOML set is a file of `[[prompt]]` entries (`name`, `kind`, `text`, optional `group` and
`file`, whose text is put before `text` as a document). `prompts = "default"` is the set shipped
in `specsweep/prompts/`; a file path is relative to the matrix. `spec-bench:PATH` and `*.jsonl`
files are JSONL (prompt_jsonl.py: Spec-Bench's question file), `hf://datasets/...` a file of a
Hugging Face dataset repo, `?per_kind=N` the first N prompts of each kind (prompt_sources.py).

`prompt_kinds` keeps the prompts whose kind or group it names: with Spec-Bench,
`["coding"]` is MT-bench's coding questions and `["mt-bench"]` all eight MT-bench categories.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.matrix import prompt_jsonl
from specsweep.matrix.prompt_sources import SHIPPED, Located, locate, parse


@dataclass(frozen=True)
class Prompt:
    set: str
    name: str
    kind: str
    text: str
    group: str = ""  # a family of kinds (Spec-Bench: "mt-bench" over MT-bench's 8 categories); empty: the kind

    def __post_init__(self):
        if not self.group:
            object.__setattr__(self, "group", self.kind)

    @property
    def id(self) -> str:
        """Stable over runs; changes when the text does."""
        return f"{self.set}/{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"


def load_set(name: str, matrix_path: Path, kinds: list[str] = ()) -> list[Prompt]:
    source = parse(name)
    located = locate(source, matrix_path)
    if source.format == "jsonl":
        entries = prompt_jsonl.read(located.path, located.where)
    else:
        entries = _read_toml(located, matrix_path)
    set_name = located.path.stem if located.path.parent == SHIPPED else source.set_name
    prompts = [Prompt(set_name, **e) for e in entries]
    names = [p.name for p in prompts]
    if len(set(names)) != len(names):
        raise SpecsweepError(f"prompt set {located.where}: prompt names must be unique")
    if source.per_kind:
        prompts = _first_per_kind(prompts, source.per_kind)
    if kinds:
        known = {p.kind for p in prompts} | {p.group for p in prompts}
        unknown = sorted(set(kinds) - known)
        if unknown:
            raise SpecsweepError(f"prompt set {located.where}: no prompt of kind or group {unknown[0]!r} "
                                 f"(there are: {', '.join(sorted(known))})")
        prompts = [p for p in prompts if p.kind in kinds or p.group in kinds]
    return prompts


def _first_per_kind(prompts: list[Prompt], n: int) -> list[Prompt]:
    """The first n of each kind, in file order; per kind, so it commutes with `prompt_kinds`."""
    seen: Counter = Counter()
    out = []
    for p in prompts:
        seen[p.kind] += 1
        if seen[p.kind] <= n:
            out.append(p)
    return out


def _read_toml(located: Located, matrix_path: Path) -> list[dict]:
    path = located.path
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SpecsweepError(f"prompt set {located.where}: {e}") from None
    entries = data.get("prompt")
    if not isinstance(entries, list) or not entries:
        raise SpecsweepError(f"prompt set {located.where}: no [[prompt]] entries")
    out = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "kind", "text")):
            raise SpecsweepError(f"prompt set {located.where}: [[prompt]] #{i} needs name, kind and text strings")
        if not isinstance(entry.get("group", ""), str):
            raise SpecsweepError(f"prompt set {located.where}: [[prompt]] #{i}: group must be a string")
        text = entry["text"]
        if "file" in entry:
            doc = located.sibling(str(entry["file"]), matrix_path)
            try:
                text = doc.read_text(encoding="utf-8").strip() + "\n\n" + text
            except OSError as e:
                raise SpecsweepError(f"prompt set {located.where}: {entry['name']}: cannot read {doc}: "
                                     f"{e.strerror}") from None
        out.append({"name": entry["name"], "kind": entry["kind"], "group": entry.get("group", ""), "text": text})
    return out
