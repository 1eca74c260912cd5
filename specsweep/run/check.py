"""`specsweep check MATRIX`: before a run, from GGUF headers only, does every draft fit its target's
vocabulary (llama.cpp's rules, with each model's override_kv) and does every cell fit the device's
free memory?

Per draft or DFlash pair: `fit A -> T (method): ok | REFUSED`, then `vocab A -> T: OUTCOME`, one of
"compatible", "compatible after an override (as the files are: RULE; with ...)" or
"refused: RULE; fix: OVERRIDES" (the fix where a special token the file does not set is the cause),
and what llama.cpp tolerates as `  note:` lines."""

from __future__ import annotations

from pathlib import Path

import click

from specsweep import methods
from specsweep.errors import SpecsweepError
from specsweep.matrix import load as matrix_load
from specsweep.matrix.models import ModelRef, model_overrides, resolve
from specsweep.models import placement
from specsweep.models.memory import (HOST, TIGHT, FreeMemory, estimate_cell_bytes, fit_warning, free_device_memory, gib,
                                     nvidia_smi_free, placement_memory)
from specsweep.models.drafter_fit import check_cell_models, pairing
from specsweep.models.vocab_match import VocabRefused
from specsweep.run.plan import make_plan


def _path(ref: ModelRef, matrix_path: Path) -> Path | None:
    """The model's file if it is there (headers are read, nothing is downloaded or loaded); a tiny
    synthetic model is written on the spot, a full-size one is left for `run`."""
    tiny_synth = ref.kind == "synth" and ref.identity.get("scale") == "tiny"
    path = resolve(ref, matrix_path, create=tiny_synth)
    return path if path.is_file() else None


@click.command("check")
@click.argument("matrix_file", metavar="MATRIX", type=click.Path(path_type=Path))
@click.option("--vram", "vram", metavar="SIZE", default=None,
              help='Check memory as if each GPU a cell uses had SIZE free, e.g. "24GiB" (the card you plan for, '
                   'not this machine\'s); a cell that does not fit gets the --n-cpu-moe that would make it fit.')
def check(matrix_file: Path, vram: str | None) -> None:
    """Check MATRIX's draft/target vocabularies and memory needs from GGUF headers, loading nothing."""
    per_gpu = placement.parse_size(vram, "--vram") if vram is not None else None
    matrix = matrix_load.load(matrix_file)
    refused = []
    try:
        groups = make_plan(matrix, None)
    except SpecsweepError as e:  # the blocks design cannot pair some cell: say so, check the rest
        refused.append(e.message)
        click.echo(f"design {matrix.design}: REFUSED ({e.message})")
        matrix.design = "sequential"
        groups = make_plan(matrix, None)
    paths: dict[str, Path | None] = {}
    for g in groups:
        for ref in g.models.values():
            if ref.name not in paths:
                try:
                    paths[ref.name] = _path(ref, matrix.path)
                except SpecsweepError as e:  # not fetched yet, offline: say so and go on
                    click.echo(f"model {ref.name}: {e.message}")
                    paths[ref.name] = None
    free_per_gpu = nvidia_smi_free() or []
    pairs = set()
    for g in groups:
        for plan in g.cells:
            cell = plan.cell
            models = cell.models
            wanted = set(cell.gpus) | ({cell.settings["draft_gpu"]} if cell.settings.get("draft_gpu") is not None else set())
            if wanted and max(wanted) >= len(free_per_gpu) and per_gpu is None:
                have = f"{len(free_per_gpu)} GPU{'s' if len(free_per_gpu) != 1 else ''}" if free_per_gpu else "no GPU nvidia-smi can see"
                click.echo(f"warning: cell {cell.name!r} asks for GPU {max(wanted)} but this machine has {have}"
                           + (" (llama.cpp would run it on the CPU)" if not free_per_gpu else ""))
            key = pairing(cell.method, models, cell.settings)
            if methods.get(cell.method).check is not None and key not in pairs:
                pairs.add(key)
                what = " -> ".join([m.name for r, m in models.items() if r != "target"]
                                   + [models["target"].name]) + f" ({cell.method})"
                if all(paths[m.name] for m in models.values()):
                    try:
                        vocab = check_cell_models(models, cell.method, lambda ref: paths[ref.name], cell.settings,
                                                  model_overrides)
                        click.echo(f"fit {what}: ok")
                        if vocab is not None:
                            click.echo(f"vocab {what}: {vocab.line()}")
                            for note in vocab.warnings:
                                click.echo(f"  note: {note}")
                    except VocabRefused as e:
                        refused.append(e.message)
                        click.echo(f"fit {what}: REFUSED")
                        click.echo(f"vocab {what}: {e.check.line()}")
                    except SpecsweepError as e:
                        refused.append(e.message)
                        click.echo(f"fit {what}: REFUSED")
                else:
                    click.echo(f"fit {what}: not checked (a file is not there yet)")
            files = [paths[m.name] for m in models.values()]
            if all(files):
                needed = estimate_cell_bytes(files, cell.kv, cell.n_ctx, load_mtp=cell.method == "mtp")
                free = (FreeMemory(per_gpu * len(cell.gpus), f"{vram} per GPU (--vram)") if per_gpu and cell.gpus
                        else free_device_memory(cell.gpus))
                target = paths[models["target"].name]
                on_host = _placement(cell, target, refused) if cell.gpus else 0
                on_gpu = cell.gpus and (per_gpu is not None or free.where.startswith("GPU"))
                if on_gpu:  # what a placement keeps on the host takes no GPU memory
                    needed -= on_host
                warning = fit_warning(f"cell {cell.name!r}", needed, free)
                click.echo(f"memory {cell.name}: {gib(needed)} of {gib(free.bytes)} free on {free.where}"
                           + (f" -- warning: {warning}" if warning else ""))
                if warning and on_gpu and placement.target_spec(cell.settings).empty:
                    budget = vram or f"{free.bytes / len(cell.gpus) / 2**30:.1f}GiB"
                    click.echo("  " + _offload_hint(cell, target, needed, free, budget))
    if refused:
        raise SpecsweepError(refused[0] if len(refused) == 1 else f"{refused[0]} (and {len(refused) - 1} more)")


def _offload_hint(cell, target: Path, needed: int, free: FreeMemory, budget: str) -> str:
    """How a cell that does not fit the GPU(s) would: the fewest layers whose experts go to the host
    (llama.cpp's --n-cpu-moe, `n_cpu_moe` in a matrix), by the header's estimate."""
    mtp = cell.method == "mtp"
    others = needed - estimate_cell_bytes([target], cell.kv, cell.n_ctx, load_mtp=mtp)  # a draft's or drafter's

    def fits(pm) -> bool:
        return others + sum(pm.devices.values()) <= TIGHT * free.bytes

    found = placement.smallest_n_cpu_moe(target, fits, cell.gpus, cell.tensor_split, cell.kv, cell.n_ctx,
                                         load_mtp=mtp)
    if found is None:
        return ("no --n-cpu-moe makes it fit (a dense target, or too big with every expert on the host): "
                "try n_gpu_layers, a smaller quant or a shorter n_ctx")
    n, pm = found
    fit_it = f', or let llama.cpp fit it: vram_budget = "{budget}"' if len(cell.gpus) == 1 else ""  # one GPU only
    return (f"fits with n_cpu_moe = {n} (--n-cpu-moe {n}: target {gib(pm.host)} on the host, "
            f"{gib(sum(pm.devices.values()))} on the GPU; estimate, compute buffers not counted){fit_it}")


def _placement(cell, path: Path, refused: list[str]) -> int:
    """The cell's target placement against its header, and its split by the estimate, one line;
    returns the target's bytes in host memory (0 without a placement)."""
    spec = placement.target_spec(cell.settings)
    if spec.empty:
        return 0
    try:
        placement.check_against_header(spec, path, cell.models["target"].name, "target", cell.method == "mtp")
    except SpecsweepError as e:
        refused.append(e.message)
        click.echo(f"placement {cell.name}: REFUSED ({e.message})")
        return 0
    if spec.vram_budget is not None:
        click.echo(f"placement {cell.name}: vram_budget {spec.vram_budget_text}, fitted when the run starts")
        return 0
    pm = placement_memory(path, spec.overrides, spec.n_gpu_layers, cell.gpus, cell.tensor_split, cell.kv,
                          cell.n_ctx, load_mtp=cell.method == "mtp")
    click.echo(f"placement {cell.name}: target " + ", ".join(f"{p} {gib(pm.bytes_on(p))}" for p in (HOST, *pm.devices))
               + f" ({len(pm.overridden)} tensors overridden; estimate)")
    return pm.host
