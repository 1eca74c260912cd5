"""What a run will do, decided before anything loads: the shard's cells, their prompts, the models
each group loads once, and which trials are already recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from specsweep import methods
from specsweep.errors import SpecsweepError
from specsweep.matrix.cells import Cell
from specsweep.matrix.load import Matrix
from specsweep.matrix.models import ModelRef
from specsweep.matrix.prompts import Prompt, load_set


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecsweepError(f"--shard {text!r}: expected I/N, e.g. 2/4") from None
    if not 1 <= i <= n:
        raise SpecsweepError(f"--shard {text!r}: I must be between 1 and N")
    return i, n


@dataclass
class CellPlan:
    cell: Cell
    prompts: list[Prompt]
    todo: list[tuple[Prompt, int]]  # (prompt, trial index) not yet recorded


@dataclass
class Group:
    """Cells that share a loaded target (same file, same devices). Their drafts load once each,
    on first use, and stay loaded until the group is done."""
    target: ModelRef
    gpus: tuple[int, ...]
    split_mode: str = "layer"
    tensor_split: tuple[float, ...] = ()
    cells: list[CellPlan] = field(default_factory=list)

    @property
    def load_mtp(self) -> bool:
        """Load the target's MTP layers: only when a cell runs them (llama.cpp skips them otherwise)."""
        return any(methods.get(c.cell.method).context == "mtp" for c in self.live)

    @property
    def models(self) -> dict[str, ModelRef]:
        """Every model the group loads, by name."""
        refs = {self.target.name: self.target}
        for c in self.cells:
            refs.update({m.name: m for m in c.cell.models.values()})
        return refs

    @property
    def live(self) -> list[CellPlan]:
        """The cells with trials still to run."""
        return [c for c in self.cells if c.todo]

    @property
    def n_todo(self) -> int:
        return sum(len(c.todo) for c in self.live)


def select_shard(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """Cell k (in matrix order) belongs to shard (k mod N) + 1: deterministic, and every cell in
    exactly one shard."""
    if not shard:
        return cells
    i, n = shard
    return [c for k, c in enumerate(cells) if k % n == i - 1]


def select_targets(cells: list[Cell], targets, matrix_path: Path) -> list[Cell]:
    """The cells whose target model is one of `targets` ([models] or models.lock names). Shards
    are taken after this selection, so `--target` and `--shard` combine."""
    known = {c.models["target"].name for c in cells}
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise SpecsweepError(f"{matrix_path}: no cell has target {unknown[0]!r} "
                             f"(targets: {', '.join(sorted(known))})")
    return [c for c in cells if c.models["target"].name in targets]


def make_plan(matrix: Matrix, shard, done: set[tuple[str, str, int]]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for cell in select_shard(matrix.cells, shard):
        prompts = load_set(cell.prompts, matrix.path, cell.prompt_kinds)
        todo = [(p, t) for p in prompts for t in range(cell.trials) if (cell.id, p.id, t) not in done]
        target = cell.models["target"]
        layout = (tuple(cell.gpus), cell.split_mode if len(cell.gpus) > 1 else "layer",
                  tuple(cell.tensor_split) if len(cell.gpus) > 1 else ())
        key = (json.dumps(target.identity, sort_keys=True), layout)
        group = groups.setdefault(key, Group(target, *layout))
        group.cells.append(CellPlan(cell, prompts, todo))
    for group in groups.values():  # baselines first: they give the reference tokens
        group.cells.sort(key=lambda c: c.cell.method != "baseline")
    return list(groups.values())


def draft_gpus(cell: Cell) -> tuple[int, ...]:
    """Where a cell's draft model (or DFlash drafter) goes: `draft_gpu`, else with the target."""
    gpu = cell.settings.get("draft_gpu")
    return (gpu,) if gpu is not None and cell.gpus else tuple(cell.gpus)


def model_refs(groups: list[Group]) -> dict[str, ModelRef]:
    """The models that trials still to run need."""
    refs = {}
    for g in groups:
        for c in g.live:
            refs.update({m.name: m for m in c.cell.models.values()})
    return refs


def describe(groups: list[Group], matrix_path: Path, resolve_path) -> list[str]:
    """The --dry-run listing."""
    lines = []
    for n, g in enumerate(groups, 1):
        where = "CPU" if not g.gpus else "GPU " + "+".join(map(str, g.gpus))
        if len(g.gpus) > 1:
            where += f" (split {g.split_mode}" + (f" {list(g.tensor_split)}" if g.tensor_split else "") + ")"
        lines.append(f"group {n}: load on {where}:")
        for ref in g.models.values():
            lines.append(f"  model {ref.name}: {ref.describe()} -> {resolve_path(ref)}")
        for c in g.cells:
            cell = c.cell
            n_all = len(c.prompts) * cell.trials
            state = f"{len(c.todo)}/{n_all} trials to run"
            lines.append(f"  - {cell.name} [{cell.id}] kv={cell.kv} n_predict={cell.n_predict} "
                         f"prompts={len(c.prompts)} trials={cell.trials} warmup={cell.warmup}: {state}")
    return lines
