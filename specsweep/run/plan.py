"""What a run will do, decided before anything loads: the shard's cells, their prompts, the models
each group loads once, and which trials are already recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from specsweep import methods
from specsweep.errors import SpecsweepError
from specsweep.matrix.cells import NEUTRAL, Cell
from specsweep.matrix.load import Matrix
from specsweep.matrix.models import ModelRef
from specsweep.matrix.prompts import Prompt, load_set
from specsweep.models.placement import TARGET_KEYS
from specsweep.run.blocks import BlockPlan, BlockTodo, blocks_to_run, plan_blocks


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
    todo: list[tuple[Prompt, int]]  # (prompt, trial index) not yet recorded; in blocks: (prompt, block)


@dataclass
class Group:
    """Cells that share a loaded target (same file, same devices). Their drafts load once each,
    on first use, and stay loaded until the group is done."""
    target: ModelRef
    gpus: tuple[int, ...]
    split_mode: str = "layer"
    tensor_split: tuple[float, ...] = ()
    cells: list[CellPlan] = field(default_factory=list)
    design: str = "sequential"
    backend: str = "inprocess"  # a server group loads nothing in process but the target's vocabulary
    blocks: list[BlockTodo] = field(default_factory=list)  # blocks design: the blocks still to run
    block_plan: BlockPlan | None = None
    # the target's placement keys (models/placement.py), shared by the group's cells; a vram_budget's
    # fit (models/fit.py Fit) once resolved before the run
    placement: dict = field(default_factory=dict)
    fitted: object = None

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


def select_shard(items: list, shard: tuple[int, int] | None) -> list:
    """Item k (in matrix order) belongs to shard (k mod N) + 1: deterministic, and every item in
    exactly one shard. Items are cells in the sequential design and groups in the blocks design
    (a block needs every cell of its group in one process)."""
    if not shard:
        return items
    i, n = shard
    return [c for k, c in enumerate(items) if k % n == i - 1]


def select_targets(cells: list[Cell], targets, matrix_path: Path) -> list[Cell]:
    """The cells whose target model is one of `targets` ([models] or models.lock names). Shards
    are taken after this selection, so `--target` and `--shard` combine."""
    known = {c.models["target"].name for c in cells}
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise SpecsweepError(f"{matrix_path}: no cell has target {unknown[0]!r} "
                             f"(targets: {', '.join(sorted(known))})")
    return [c for c in cells if c.models["target"].name in targets]


def placement_of(cell: Cell) -> dict:
    """The target's placement keys a cell sets; with a vram_budget also what the fit depends on
    (cells that differ there load the target differently, so they are groups of their own)."""
    place = {k: cell.settings[k] for k in TARGET_KEYS if cell.settings.get(k) not in (None, [], NEUTRAL.get(k))}
    if "vram_budget" in place:
        place.update({k: cell.settings[k] for k in ("gpus", "n_ctx", "kv", "n_batch", "flash_attn")})
    return place


def _group(cells: list[Cell], matrix: Matrix) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for cell in cells:
        target = cell.models["target"]
        layout = (tuple(cell.gpus), cell.split_mode if len(cell.gpus) > 1 else "layer",
                  tuple(cell.tensor_split) if len(cell.gpus) > 1 else ())
        backend = cell.settings.get("backend", "inprocess")
        place = placement_of(cell)
        key = (json.dumps(target.identity, sort_keys=True), layout, json.dumps(place, sort_keys=True), backend)
        group = groups.setdefault(key, Group(target, *layout, design=matrix.design, placement=place,
                                             backend=backend))
        group.cells.append(CellPlan(cell, load_set(cell.prompts, matrix.path, cell.prompt_kinds), []))
    for group in groups.values():  # baselines first: they give the reference tokens
        group.cells.sort(key=lambda c: c.cell.method != "baseline")
    return list(groups.values())


def make_plan(matrix: Matrix, shard, trials: list[dict] = (), run: int = 0) -> list[Group]:
    """The groups to run and their trials still to do, given the `trials` already recorded. A run
    index (`run --runs N`) joins a trial's identity: run 1 does not skip what run 0 recorded."""
    mine = [t for t in trials if t.get("run", 0) == run]
    if matrix.design == "sequential":
        done = {(t["cell_id"], t["prompt_id"], t["trial"]) for t in mine}
        groups = _group(select_shard(matrix.cells, shard), matrix)
        for g in groups:
            for c in g.cells:
                c.todo = [(p, i) for p in c.prompts for i in range(c.cell.trials) if (c.cell.id, p.id, i) not in done]
        return groups
    groups = select_shard(_group(matrix.cells, matrix), shard)
    recorded = {(t["block"], t.get("attempt", 0), t["cell_id"], t["prompt_id"])
                for t in mine if t.get("design") == "blocks"}
    for g in groups:
        _check_pairable(g, matrix.path)
        prompts = g.cells[0].prompts
        g.block_plan = plan_blocks(len(g.cells), matrix.blocks or g.cells[0].cell.trials,
                                   round_up=matrix.blocks is None)
        g.blocks = blocks_to_run(recorded, g.block_plan.n_blocks, [c.cell.id for c in g.cells], [p.id for p in prompts])
        for c in g.cells:
            c.todo = [(p, b.block) for b in g.blocks for p in prompts]
    return groups


def _check_pairable(group: Group, matrix_path: Path) -> None:
    """Blocks pair every cell with the baseline of its own block: the group's cells must share their
    prompts and trial count, and each needs a baseline cell measuring the same thing."""
    first = group.cells[0]
    for c in group.cells[1:]:
        if [p.id for p in c.prompts] != [p.id for p in first.prompts] or c.cell.trials != first.cell.trials:
            raise SpecsweepError(f"{matrix_path}: blocks with trials that cannot be paired: cells {first.cell.name!r} "
                                 f"and {c.cell.name!r} share a target but not their prompts and trials "
                                 f"(give them the same, or design = \"sequential\")")
    baselines = {c.cell.reference_key() for c in group.cells if c.cell.method == "baseline"}
    for c in group.cells:
        if c.cell.reference_key() not in baselines:
            raise SpecsweepError(f"{matrix_path}: blocks with trials that cannot be paired: cell {c.cell.name!r} has "
                                 f"no baseline cell with its target, KV type, devices, n_predict and prompts "
                                 f"(add one, or design = \"sequential\")")


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
        if g.placement:
            where += " (" + ", ".join(f"{k}={v}" for k, v in g.placement.items() if k in TARGET_KEYS) + ")"
        lines.append(f"group {n}: llama-server on {where} (a server per cell):" if g.backend == "server"
                     else f"group {n}: load on {where}:")
        for ref in g.models.values():
            kv = f" override_kv={list(ref.override_kv)}" if ref.override_kv else ""
            lines.append(f"  model {ref.name}: {ref.describe()}{kv} -> {resolve_path(ref)}")
        if g.block_plan is not None:
            bp = g.block_plan
            lines.append(f"  blocks: {bp.n_blocks} (Williams orders of {bp.n_cells} cells, period {bp.period}), "
                         f"{len(g.blocks)} to run" + (f"; {bp.note}" if bp.note else ""))
        for c in g.cells:
            cell = c.cell
            n_all = len(c.prompts) * (g.block_plan.n_blocks if g.block_plan else cell.trials)
            state = f"{len(c.todo)}/{n_all} trials to run"
            lines.append(f"  - {cell.name} [{cell.id}] kv={cell.kv} n_predict={cell.n_predict} "
                         f"prompts={len(c.prompts)} trials={cell.trials} warmup={cell.warmup}: {state}")
    return lines
