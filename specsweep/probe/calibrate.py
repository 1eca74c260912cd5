"""`specsweep probe --calibrate`: a card's own loop costs in a minute or two, without a matrix.

After the probe, a short matrix of the probed file runs through the ordinary machinery (matrix,
cells, runner; its records are ordinary trial records, resumable) into
`results/calibrate-<file>-<card>-<engine>/`: plain decoding and, for every drafter the files allow
(the target's MTP head when it has the layer, `--draft`'s model, `--drafter`'s DFlash, DSpark or
EAGLE-3), draft lengths 2 and 4 at two synthetic acceptance levels each (L = 1 + 0.3 n and
1 + 0.8 n), in blocks, with the probe's placement, KV type, threads and batch. Two lengths tell
the drafter's cost per call from its cost per drafted token and the verify's cost per pass from
its cost per verified token; two acceptance levels vary the passes per token and the rollbacks;
the baseline gives plain decoding's own step and host work. `predict` takes a card's calibration
before any other record (analysis/pools.py).

The folder is named by the file, the card and the engine (the package's source hash), so another
card or a changed engine calibrates afresh while an interrupted calibration resumes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from specsweep.analysis.records import CALIBRATION_PREFIX
from specsweep.errors import SpecsweepError
from specsweep.matrix.written import settings_lines, write_if_changed

LENGTHS = (2, 4)  # draft_max of the calibration's cells
LEVELS = (0.3, 0.8)  # accepted share of a full draft: synth_len = 1 + level x n
BLOCKS = 4
N_PREDICT = 128


@dataclass(frozen=True)
class Model:
    """A model of the calibration: a file, or a synthetic stand-in's recipe (its matrix entry names
    the cache file the probe wrote, and its records the shape card, as a device matrix's do)."""
    path: Path
    recipe: dict | None = None  # a `[models]` synth entry: {"synth": card, "scale": ..., ...}

    def entry(self) -> str:
        if self.recipe is None:
            return "{ path = " + json.dumps(str(self.path.resolve())) + " }"
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.recipe.items()) + " }"


def drafter_method(path: Path) -> str:
    """dflash, dspark or eagle3, from a drafter GGUF's header (one line when it is none of them)."""
    from specsweep.models.header import field, open_gguf

    reader = open_gguf(path, path.name)
    arch = str(field(reader, "general.architecture", ""))
    if arch == "eagle3":
        return "eagle3"
    if arch == "dflash":
        names = {t.name for t in reader.tensors}
        return "dspark" if "markov_w1.weight" in names else "dflash"
    raise SpecsweepError(f"--drafter {path.name}: a {arch or 'model without an architecture'}, not a DFlash, "
                         f"DSpark or EAGLE-3 drafter (give a draft model with --draft)")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "x"


def matrix_name(target: Path, card: str, engine: str) -> str:
    return f"{CALIBRATION_PREFIX}{slug(target.stem)}-{slug(card)}-{engine[:8]}"


def matrix_text(name: str, target: Model, *, mtp: bool, draft: Model | None = None,
                drafters: tuple[tuple[Model, str], ...] = (), gpus: tuple[int, ...] = (0,), kv: str = "q8_0",
                n_batch: int = 512, threads: int = 0, placement: dict | None = None, blocks: int = BLOCKS,
                n_predict: int = N_PREDICT) -> str:
    """The calibration's matrix (TOML); `drafters`: (model, method) of each DFlash/DSpark/EAGLE-3."""
    # arms: (method, the row's model key line); drafters named drafter1, drafter2, ...
    arms = ([("mtp", "")] if mtp else []) + ([("draft", 'draft = "draft"')] if draft else []) + \
        [(method, f'drafter = "drafter{i}"') for i, (_, method) in enumerate(drafters, 1)]
    if not arms:
        raise SpecsweepError("--calibrate needs a drafter: a target with its MTP layer, --draft MODEL or "
                             "--drafter DRAFTER (or their --synth-* stand-ins)")
    defaults = {"target": "target", "gpus": list(gpus), "kv": kv, "n_batch": n_batch, "threads": threads,
                "n_predict": n_predict, "warmup": 1, "prompt_kinds": ["chat"],
                **{k: v for k, v in (placement or {}).items() if v not in (None, [], ())}}
    lines = [f'name = "{name}"',
             f"description = {json.dumps('specsweep probe --calibrate: ' + ', '.join(a for a, _ in arms))}",
             'design = "blocks"', f"blocks = {blocks}", "", "[models]", f"target = {target.entry()}"]
    if draft:
        lines.append(f"draft = {draft.entry()}")
    lines += [f"drafter{i} = {m.entry()}" for i, (m, _) in enumerate(drafters, 1)]
    lines += ["", "[defaults]", *settings_lines(defaults)]
    lines += ["", "[[cell]]", 'method = "baseline"']
    for i, (arm, role) in enumerate(arms):
        label = arm + (f" ({role.split('=')[1].strip().strip(chr(34))})" if [a for a, _ in arms].count(arm) > 1 else "")
        for n in LENGTHS:
            lengths = [round(1 + level * n, 3) for level in LEVELS]
            lines += ["", "[[cell]]", f'name = "{label} n={{draft_max}} L={{synth_len}}"', f'method = "{arm}"',
                      *([role] if role else []), f"draft_max = {n}", f"synth_len = {lengths}"]
    return "\n".join(lines) + "\n"


def write_matrix(results_root: Path, name: str, text: str) -> Path:
    """The matrix beside its records (results/<name>/calibration.toml), so a rerun resumes it."""
    return write_if_changed(Path(results_root) / name / "calibration.toml", text)
