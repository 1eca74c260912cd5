"""Before a run loads anything: every group's target placement and every draft's checked against
their GGUF headers, and a vram_budget resolved to the -ngl/-ot its fit chooses (models/fit.py), so
that bad placement input stops the run before its first trial, with nothing recorded lost."""

from __future__ import annotations

from specsweep.engine import buffer_types
from specsweep.errors import SpecsweepError
from specsweep.models import fit, placement
from specsweep.run.plan import Group


def check_placements(groups: list[Group], files: dict, log=lambda line: None) -> None:
    for g in groups:
        if not g.live:
            continue
        path = files[g.target.name]["path"]
        spec = placement.target_spec(g.placement)
        placement.check_against_header(spec, path, g.target.name, "target", g.load_mtp)
        if spec.vram_budget is not None and g.fitted is None:
            p = g.placement
            req = fit.Request(path, g.target.name, spec.vram_budget, p["gpus"][0], p["kv"], p["n_ctx"],
                              p["n_batch"], p["flash_attn"], g.load_mtp)
            g.fitted = fit.fit_placement(req, buffer_types.gpu_devices(), fit.native_tool("llama-fit-params"))
            log(f"target {g.target.name}: vram_budget {spec.vram_budget_text} -> "
                + " ".join(placement.placement_flags(p, g.fitted) or ["every layer on the GPU"])
                + f" ({g.fitted.source})")
        _check_buffer_types(placement.load_args(spec, g.fitted)["tensor_overrides"], g.target.name)
        for plan in g.live:
            dspec = placement.draft_spec(plan.cell.settings)
            ref = plan.cell.models.get("draft") or plan.cell.models.get("drafter")
            if ref is not None and not dspec.empty:
                placement.check_against_header(dspec, files[ref.name]["path"], ref.name, "draft", False)


def _check_buffer_types(overrides, name: str) -> None:
    """A device buffer type this llama.cpp build lacks (CUDA0 on a CPU-only one), refused now."""
    if not overrides:
        return
    have = buffer_types.available()
    missing = next((o for o in overrides if o.buft not in have), None)
    if missing is not None:
        raise SpecsweepError(f"target {name}: override_tensor {missing.text!r}: this llama.cpp has no buffer type "
                             f"{missing.buft!r} (it has {', '.join(sorted(have))})")
