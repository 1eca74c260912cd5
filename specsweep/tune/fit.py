"""Where the target's weights go when `--vram SIZE` says it does not fit one card: the fewest
layers whose experts stay in host memory (`n_cpu_moe`), from the GGUF headers alone, as
`specsweep check --vram` suggests it.

Every cell of a tune shares one placement: blocks pair a config with the plain decoding of its
own block, which must load the target the same way. So the placement is the largest any family
needs (MTP loads its layer, a draft model or drafter takes memory beside the target), and plain
decoding is measured there too; a family that fits under no placement is left out, said so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models import placement
from specsweep.models.memory import TIGHT, estimate_cell_bytes, gib
from specsweep.tune.candidates import Family, Files


@dataclass
class Placement:
    n_cpu_moe: int | None  # None: everything on the GPU
    notes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # families that fit under no placement


def _second_model(files: Files, family: Family) -> Path | None:
    s = family.pilot.settings
    if s.get("draft"):
        return files.draft
    if s.get("drafter"):
        return files.models()[s["drafter"]]
    return None


def _needs(files: Files, family: Family | None, budget: int, gpus: tuple[int, ...], kv: str,
           n_ctx: int, n_seq: int) -> int | None:
    """The n_cpu_moe one family (None: plain decoding) needs: 0 when it fits, None when nothing does."""
    mtp = family is not None and family.method == "mtp"
    second = _second_model(files, family) if family else None
    others = estimate_cell_bytes([second], kv, n_ctx, n_seq) if second else 0
    whole = estimate_cell_bytes([files.target], kv, n_ctx, n_seq, load_mtp=mtp) + others
    if whole <= TIGHT * budget:
        return 0
    found = placement.smallest_n_cpu_moe(files.target, lambda pm: others + sum(pm.devices.values()) <= TIGHT * budget,
                                         gpus, (), kv, n_ctx, load_mtp=mtp)
    return None if found is None else found[0]


def fit(files: Files, families: list[Family], vram: str, gpus: tuple[int, ...], kv: str, n_ctx: int,
        parallel: int) -> Placement:
    budget = placement.parse_size(vram, "--vram")
    if not gpus:
        raise SpecsweepError("--vram sizes a GPU; this tune runs on the CPU (--gpus \"\"), where it means nothing")
    if len(gpus) > 1:
        raise SpecsweepError("--vram places the target on one GPU (--gpus 0)")
    searched: dict[tuple, int | None] = {}  # what a family needs depends only on its second model and MTP

    def needs(f: Family | None) -> int | None:
        key = (_second_model(files, f) if f else None, f is not None and f.method == "mtp")
        if key not in searched:
            searched[key] = _needs(files, f, budget, gpus, kv, n_ctx, parallel)
        return searched[key]

    base = needs(None)
    if base is None:
        raise SpecsweepError(f"{files.target.name} does not fit {vram} with any --n-cpu-moe (a dense target, or too "
                             f"big with every expert in host memory): give a smaller quant or a shorter --ctx")
    out = Placement(None)
    need = {f.name: needs(f) for f in families}
    out.dropped = [name for name, n in need.items() if n is None]
    n = max([base] + [v for v in need.values() if v is not None])
    if n:
        out.n_cpu_moe = n
        out.notes.append(f"{files.target.name} does not fit {vram} whole: every config keeps the experts of its first "
                         f"{n} layers in host memory (--n-cpu-moe {n}, the most any config needs; estimate from the "
                         f"GGUF header, {gib(budget)} card, compute buffers not counted)")
    out.notes += [f"{name}: does not fit {vram} under any placement, left out" for name in out.dropped]
    return out
