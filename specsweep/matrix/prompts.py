"""Prompt sets: the texts each cell is measured on.

A set is a TOML file of `[[prompt]]` entries (`name`, `kind`, `text`, optional `file` whose text
is put before `text` as a document). `prompts = "default"` is the set shipped in
`specsweep/prompts/`; any other value is a file path relative to the matrix.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from specsweep.errors import SpecsweepError

SHIPPED = Path(__file__).resolve().parent.parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    set: str
    name: str
    kind: str
    text: str

    @property
    def id(self) -> str:
        """Stable over runs; changes when the text does."""
        return f"{self.set}/{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"


def load_set(name: str, matrix_path: Path, kinds: list[str] = ()) -> list[Prompt]:
    path = SHIPPED / f"{name}.toml" if (SHIPPED / f"{name}.toml").is_file() else matrix_path.parent / name
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.toml")))
        raise SpecsweepError(f"prompt set {name!r} not found (shipped: {shipped}; or a file next to the matrix)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SpecsweepError(f"prompt set {path}: {e}") from None
    entries = data.get("prompt")
    if not isinstance(entries, list) or not entries:
        raise SpecsweepError(f"prompt set {path}: no [[prompt]] entries")
    prompts = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "kind", "text")):
            raise SpecsweepError(f"prompt set {path}: [[prompt]] #{i} needs name, kind and text strings")
        text = entry["text"]
        if "file" in entry:
            doc = path.parent / str(entry["file"])
            try:
                text = doc.read_text(encoding="utf-8").strip() + "\n\n" + text
            except OSError as e:
                raise SpecsweepError(f"prompt set {path}: {entry['name']}: cannot read {doc}: {e.strerror}") from None
        prompts.append(Prompt(path.stem if path.parent == SHIPPED else str(name), entry["name"], entry["kind"], text))
    names = [p.name for p in prompts]
    if len(set(names)) != len(names):
        raise SpecsweepError(f"prompt set {path}: prompt names must be unique")
    if kinds:
        unknown = set(kinds) - {p.kind for p in prompts}
        if unknown:
            raise SpecsweepError(f"prompt set {path}: no prompt of kind {sorted(unknown)[0]!r}")
        prompts = [p for p in prompts if p.kind in kinds]
    return prompts
