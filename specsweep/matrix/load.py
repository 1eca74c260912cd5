"""Read a matrix file and expand it into cells.

A matrix has `name`, `description`, a `[models]` table (a name -> a models.lock name, a GGUF path
or a synthetic-model recipe), a `[defaults]` table and `[[cell]]` rows. In a row (or in
`[defaults]`) a list value is an axis: the row expands to the cartesian product of its axes, in the
order written. `prompt_kinds` and `gpus` are lists by nature; write a list of lists to sweep them.
Every problem is a `SpecsweepError` naming the file and the row, raised before anything loads.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from specsweep.errors import SpecsweepError, read_text
from specsweep.matrix.cells import Cell, make_cell
from specsweep import methods
from specsweep.matrix.keys import MODEL_KEYS
from specsweep.matrix.models import ModelRef, parse_models

TOP_KEYS = {"name", "description", "design", "blocks", "models", "defaults", "cell"}
DESIGNS = ("blocks", "sequential")
LIST_VALUED = {"prompt_kinds", "gpus", "tensor_split", "synth_rates", "override_tensor"}
ALL_KEYS = methods.all_keys()  # every key any method reads


@dataclass
class Matrix:
    path: Path
    name: str
    description: str
    models: dict[str, ModelRef]
    cells: list[Cell]
    text: str  # the file as read, for the records' matrix hash
    # "blocks": each block runs every cell of a group once per prompt in a balanced (Williams)
    # order and each cell is paired with its block's baseline; "sequential": cell after cell
    design: str = "blocks"
    blocks: int | None = None  # blocks per group; None: the cells' trials, rounded up to a full design


def load(path: str | Path) -> Matrix:
    path = Path(path)
    text = read_text(path, "matrix file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message carries "(at line L, column C)"
        raise SpecsweepError(f"{path}: malformed TOML: {e}") from None

    where = str(path)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise SpecsweepError(f"{where}: unknown top-level key {sorted(unknown)[0]!r} "
                             f"(expected: {', '.join(sorted(TOP_KEYS))})")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise SpecsweepError(f"{where}: name must be letters, digits, '-' or '_' (it names the results folder)")
    design = data.get("design", "blocks")
    if design not in DESIGNS:
        raise SpecsweepError(f"{where}: unknown design {design!r} (one of {', '.join(DESIGNS)})")
    blocks = data.get("blocks")
    if blocks is not None and (not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1):
        raise SpecsweepError(f"{where}: blocks = {blocks!r}: give a whole number of blocks, at least 1")
    if blocks is not None and design != "blocks":
        raise SpecsweepError(f"{where}: blocks = {blocks} needs design = \"blocks\"")
    models = parse_models(data.get("models", {}), path)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SpecsweepError(f"{where}: [defaults] must be a table")
    _check_keys(defaults, f"{where} [defaults]", allow_name=False)
    rows = data.get("cell", [])
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise SpecsweepError(f"{where}: no [[cell]] rows")

    cells: list[Cell] = []
    for i, row in enumerate(rows, 1):
        label = f"{where} [[cell]] #{i}" + (f" ({row['name']})" if isinstance(row.get("name"), str) else "")
        _check_keys(row, label, allow_name=True)
        for settings in _expand({**defaults, **row}):
            cells.append(_to_cell(settings, set(row), label, models, path))
    seen: dict[str, str] = {}
    for cell in cells:
        if cell.id in seen:
            raise SpecsweepError(f"{where}: cells {seen[cell.id]!r} and {cell.name!r} are the same configuration")
        seen[cell.id] = cell.name
    return Matrix(path, name, str(data.get("description", "")), models, cells, text, design, blocks)


def _check_keys(table: dict, label: str, allow_name: bool) -> None:
    for key in table:
        if key == "name" and allow_name:
            continue
        if key not in ALL_KEYS:
            raise SpecsweepError(f"{label}: unknown parameter {key!r}")


def _expand(settings: dict) -> list[dict]:
    axes = []
    for key, value in settings.items():
        is_axis = isinstance(value, list) and (key not in LIST_VALUED or (value and isinstance(value[0], list)))
        axes.append([(key, v) for v in value] if is_axis else [(key, value)])
    if any(not axis for axis in axes):
        return []
    return [dict(combo) for combo in itertools.product(*axes)]


def _to_cell(settings: dict, row_keys: set, label: str, models: dict[str, ModelRef],
             matrix_path: Path) -> Cell:
    """Validate one expanded row. A [defaults] key the method does not read is ignored; the same
    key written in the row itself is an error."""
    method = settings.get("method")
    names = ", ".join(methods.NAMES)
    if method is None:
        raise SpecsweepError(f"{label}: no method (one of {names})")
    if method not in methods.METHODS:
        raise SpecsweepError(f"{label}: unknown method {method!r} (one of {names})")
    own = methods.keys_of(method)
    values = {}
    for key in ALL_KEYS:
        if key not in own:
            if key in row_keys:
                raise SpecsweepError(f"{label}: method {method!r} has no parameter {key!r}")
            continue
        spec = own[key]
        value = settings.get(key, spec.default)
        if value is None:
            continue
        if not isinstance(value, spec.types) or (isinstance(value, bool) and bool not in spec.types):
            kind = " or ".join(t.__name__ for t in spec.types)
            raise SpecsweepError(f"{label}: {key} = {value!r} is not a {kind}")
        if spec.choices and value not in spec.choices:
            raise SpecsweepError(f"{label}: {key} = {value!r} is not one of {', '.join(spec.choices)}")
        if spec.minimum is not None and value < spec.minimum:
            raise SpecsweepError(f"{label}: {key} = {value!r} is below {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            raise SpecsweepError(f"{label}: {key} = {value!r} is above {spec.maximum}")
        values[key] = value
    for key in MODEL_KEYS:
        if key in values and values[key] not in models:
            models[values[key]] = ModelRef.locked(values[key])  # resolved through models.lock
    return make_cell(settings.get("name"), values, models, label, matrix_path)

