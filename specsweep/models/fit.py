"""`vram_budget`: the placement llama.cpp's `-fit` would choose if the GPU had that much free memory.

llama.cpp's fit (common/fit.cpp, `common_fit_params`) measures each candidate placement with a
no-alloc load and a context's memory breakdown, which ctypes cannot read, and takes the free
memory from the device itself: it has no "pretend the GPU has X free" switch, and on a CPU-only
build there is no GPU to fit to (it then only shrinks an automatic context). So:

- Where llama.cpp sees a GPU, specsweep runs llama.cpp's own `llama-fit-params` (built by
  scripts/build-native.sh next to the other native tools; $SPECSWEEP_NATIVE_BIN) on the cell's
  model, context and KV type. Its one knob is the margin it leaves free per device (`--fit-target`,
  default 1024 MiB), fit's targets being free - margin: a first run reads the free memory the tool
  sees, a second runs with margin = free - (budget - 1024 MiB), so that the tool fits to exactly
  budget - 1 GiB, as `-fit on` on a card with `budget` free would. source "llama-fit-params".
- Without a GPU (CPU-only CI, laptops), `approximate_fit` replays fit's algorithm in Python on the
  GGUF header's sizes (models.memory.placement_memory) instead of measured ones. It is an
  APPROXIMATION and is recorded as one (source "approximation"): it counts weights, KV cache and
  recurrent state but not compute buffers (hundreds of MiB at full shape), so on a real GPU it
  would place somewhat more than fit does. On a CPU-only machine every tensor is in host memory
  anyway; what it decides is the -ngl/-ot the model loads with, and llama.cpp's load log shows
  the overrides it applied.

Fit's algorithm for one GPU (the only layout vram_budget takes), as replayed here: if every layer
fits, change nothing. Else fill "dense-only" layers back to front (for an MoE, every layer but the
first on the GPU keeps its experts on the host) as far as they fit; if the model is MoE and all its
dense weights fit with room to spare, turn those layers into full ones front to back (the *last*
layers keep their experts on the host) and try to put part of one more layer's FFN on the GPU
(up, then up and gate; else only attention). The draft model, drafter or MTP head of a cell is
not part of the fit (llama-fit-params fits one model).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models.header import field, mtp_layers, open_gguf, shard_paths, trunk_layers
from specsweep.models.memory import placement_memory
from specsweep.models.placement import EXPS_REGEX, Override, parse_override

MIB = 2**20
FIT_TARGET = 1024 * MIB  # llama.cpp's --fit-target default (common_params::fit_params_target)

# the patterns fit writes for the tensors of layer I it leaves on the host (common/fit.cpp
# get_overflow_pattern): all of the FFN, all but up, only down, the experts
_PARTS = {"attn": r"blk\.{}\.ffn_(gate|up|gate_up|down).*", "up": r"blk\.{}\.ffn_(gate|gate_up|down).*",
          "gate": r"blk\.{}\.ffn_down.*", "moe": r"blk\.{}\.ffn_(up|down|gate_up|gate)_(ch|)exps"}


@dataclass(frozen=True)
class Fit:
    n_gpu_layers: int | None  # None: every layer (fit changed nothing)
    overrides: tuple[Override, ...]
    source: str  # "llama-fit-params" or "approximation"
    budget: int  # bytes
    margin: int  # what fit leaves free of the budget
    projected: int | None = None  # bytes on the GPU the fit projects (approximation: no compute buffers)

    def record(self) -> dict:
        return {"source": self.source, "n_gpu_layers": self.n_gpu_layers,
                "override_tensor": [o.text for o in self.overrides], "budget_bytes": self.budget,
                "margin_bytes": self.margin, "projected_device_bytes": self.projected}

    @classmethod
    def from_record(cls, d: dict) -> "Fit":
        """What a block's record says a run's fit chose (`record()`, read back)."""
        return cls(d.get("n_gpu_layers"), tuple(parse_override(o, "fit") for o in d.get("override_tensor") or ()),
                   d.get("source", "?"), int(d.get("budget_bytes") or 0), int(d.get("margin_bytes") or 0),
                   d.get("projected_device_bytes"))


@dataclass(frozen=True)
class Request:
    """What the fit needs to know of a cell."""
    path: Path
    name: str
    budget: int
    gpu: int = 0
    kv: str = "q8_0"
    n_ctx: int = 4096
    n_batch: int = 512
    flash_attn: bool = True
    load_mtp: bool = False


def mib(n: int) -> str:
    """Bytes as llama.cpp's fit speaks of them (its log, its --fit-target)."""
    return f"{n / MIB:.1f} MiB"


def fit_placement(req: Request, gpus_seen: list[dict] | None, tool: Path | None) -> Fit:
    """llama-fit-params where llama.cpp sees a GPU (`gpus_seen`, engine.buffer_types.gpu_devices()),
    else the approximation. A GPU without the tool is refused rather than approximated."""
    if gpus_seen:
        if tool is None or not Path(tool).is_file():
            raise SpecsweepError("vram_budget on a GPU runs llama.cpp's llama-fit-params, which is not built "
                                 "(scripts/build-native.sh; or point $SPECSWEEP_NATIVE_BIN at its folder)")
        return run_fit_tool(req, Path(tool))
    return approximate_fit(req)


# --- the approximation ---------------------------------------------------------------------------

def _layout(hp_ngl: int, n_layer: int, n_part: int, overflow: str) -> tuple[int, tuple[Override, ...]]:
    """fit's set_ngl_tensor_split_tbo for one GPU: -ngl n_layer; of the GPU's layers the first
    n_layer - n_part are full, the next n_part leave their FFN part on the host (the first of them
    the `overflow` part, the rest their experts)."""
    il0 = hp_ngl + 1 - n_layer + (n_layer - n_part)
    return n_layer, tuple(Override(_PARTS[overflow if il == il0 else "moe"].format(il), "CPU")
                          for il in range(il0, il0 + n_part))


def _trunk(req: Request) -> tuple[bool, int]:
    """(MoE?, fit's hp_ngl: the trunk's layers, the MTP layers too when they load) from the header."""
    reader = open_gguf(shard_paths(req.path, req.name)[0], req.name)
    arch = field(reader, "general.architecture", "")
    moe = int(field(reader, f"{arch}.expert_count", 0) or 0) > 0
    hp_ngl = trunk_layers(reader) + (mtp_layers(reader) if req.load_mtp else 0)
    return moe, hp_ngl


def _gpu_bytes(req: Request, ngl: int | None = None, overrides=()) -> int:
    """The estimate's bytes on the cell's GPU with -ngl `ngl` and these -ot overrides."""
    return placement_memory(req.path, overrides, ngl, (req.gpu,), (), req.kv, req.n_ctx, load_mtp=req.load_mtp,
                            name=req.name).bytes_on(f"GPU{req.gpu}")


def approximate_fit(req: Request, margin: int = FIT_TARGET) -> Fit:
    """fit's algorithm (steps 1, 3 and 4 of common_params_fit_impl; the context is the cell's) on
    header sizes. Each search takes the most layers that fit, which is what fit's false-position
    search converges to when memory grows with every layer, as it does here."""
    target = req.budget - margin
    moe, hp_ngl = _trunk(req)

    def cfg_mem(n_layer: int, n_part: int, overflow: str = "moe") -> int:
        return _gpu_bytes(req, *_layout(hp_ngl, n_layer, n_part, overflow))

    def fit(ngl, overrides, projected) -> Fit:
        return Fit(ngl, tuple(overrides), "approximation", req.budget, margin, projected)

    full = _gpu_bytes(req)
    if full <= target:  # step 1: no changes needed
        return fit(None, (), full)
    if target <= 0:
        raise SpecsweepError(too_small(req, margin))
    surplus = target - _gpu_bytes(req, None, (Override(rf"blk\.\d+{EXPS_REGEX}", "CPU"),)) if moe else 0

    def part(n: int) -> int:  # step 3: dense-only layers; the last device's first layer stays full
        return max(n - 1, 0) if moe else 0

    n = _most(0, hp_ngl + 1, lambda k: cfg_mem(k, part(k)) <= target)
    if n == 0:
        raise SpecsweepError(too_small(req, margin))
    if not moe or surplus <= 0:
        ngl, ot = _layout(hp_ngl, n, part(n), "moe")
        return fit(ngl, ot, cfg_mem(n, part(n)))
    # step 4: turn dense-only layers into full ones, front to back
    n_full = _most(n - part(n), n, lambda k: cfg_mem(n, n - k) <= target)
    n_part, overflow = n - n_full, "moe"
    if n_part > 0 and n > 1:  # part of one more layer: up (then gate) stays on the GPU, else only attention
        if cfg_mem(n, n_part, "up") < target:
            overflow = "gate" if cfg_mem(n, n_part, "gate") < target else "up"
        elif cfg_mem(n, n_part, "attn") < target:
            overflow = "attn"
    ngl, ot = _layout(hp_ngl, n, n_part, overflow)
    return fit(ngl, ot, cfg_mem(n, n_part, overflow))


def _most(lo: int, hi: int, fits) -> int:
    """The largest k in [lo, hi] with fits(k), given fits(lo) (or lo) and monotone fits."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def too_small(req: Request, margin: int = FIT_TARGET, who: str = "") -> str:
    """The refusal of a budget that fits no layer, with what would fit (estimated from the header)."""
    moe, hp_ngl = _trunk(req)

    def need(n_layer: int | None, n_part: int = 0) -> str:
        placed = _gpu_bytes(req, *_layout(hp_ngl, n_layer, n_part, "moe")) if n_layer is not None else _gpu_bytes(req)
        return mib(placed + margin)

    what = f"{need(hp_ngl + 1, hp_ngl)} every layer with its experts on the host, {need(None)} all of it" if moe \
        else f"{need(None)} every layer"
    return (f"vram_budget {mib(req.budget)} is too small for any placement of {req.name}{who}: after llama.cpp's "
            f"{mib(margin)} margin (--fit-target) not one layer fits; about {need(1)} would fit its output layer, "
            f"{what} (estimated from the GGUF header; compute buffers not counted)")


# --- llama.cpp's llama-fit-params -----------------------------------------------------------------

_FREE = re.compile(r"projected to use (\d+) MiB of device memory vs\. (\d+) MiB of free device memory")
_NGL = re.compile(r"-ngl (-?\d+)")
_OT = re.compile(r'-ot "([^"]*)"')
_USED = re.compile(r"\d+ layers(?: \(\s*\d+ overflowing\))?,\s*(\d+) MiB used")


def _tool_cmd(tool: Path, req: Request, margin_mib: int) -> list[str]:
    return [str(tool), "-m", str(req.path), "-c", str(req.n_ctx), "-b", str(req.n_batch), "-ub", str(req.n_batch),
            "-ctk", req.kv, "-ctv", req.kv, "-fa", "on" if req.flash_attn else "off", "-np", "1",
            "-sm", "none", "-mg", str(req.gpu), "--fit-target", str(margin_mib), "-lv", "4"]


def _run_tool(cmd: list[str]) -> str:
    from specsweep.engine.native import native_env  # the engine's own libllama/libggml
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=900,
                              env=native_env(Path(cmd[0])))
    except (OSError, subprocess.SubprocessError) as e:
        raise SpecsweepError(f"llama-fit-params could not run: {e}") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        last = next((ln.strip() for ln in reversed(out.splitlines()) if ln.strip()), "no output")
        raise SpecsweepError(f"llama-fit-params failed (exit {proc.returncode}): {last}")
    return out


def run_fit_tool(req: Request, tool: Path) -> Fit:
    """Two runs of llama-fit-params: the free memory it sees, then the fit to budget - 1 GiB."""
    first = _run_tool(_tool_cmd(tool, req, FIT_TARGET // MIB))
    m = _FREE.search(first)
    if not m:
        raise SpecsweepError("llama-fit-params did not say how much device memory is free (is the GPU visible to it?)")
    free_mib = int(m[2])
    margin_mib = free_mib - (req.budget - FIT_TARGET) // MIB
    if margin_mib < 0:
        raise SpecsweepError(f"vram_budget {mib(req.budget)}: GPU {req.gpu} has only {free_mib} MiB free, less than "
                             f"the budget less llama.cpp's 1 GiB margin")
    out = _run_tool(_tool_cmd(tool, req, margin_mib))
    lines = [ln for ln in out.splitlines() if ln.startswith("-c ")]
    if not lines:
        raise SpecsweepError("llama-fit-params printed no fitted arguments")
    ngl = int(_NGL.search(lines[-1])[1]) if _NGL.search(lines[-1]) else -1
    ot = _OT.search(lines[-1])
    overrides = tuple(Override(*item.rsplit("=", 1)) for item in ot[1].split(",")) if ot else ()
    if ngl == 0:
        raise SpecsweepError(too_small(req, FIT_TARGET, " (llama-fit-params puts no layer on the GPU)"))
    used = _USED.findall(out)  # the fitted placement's use; none when nothing had to change
    projected = int(used[-1]) * MIB if used else int(_FREE.search(out)[1]) * MIB
    return Fit(None if ngl < 0 else ngl, overrides, "llama-fit-params", req.budget, FIT_TARGET, projected)


def native_bin() -> Path:
    """The folder of the native llama.cpp tools: $SPECSWEEP_NATIVE_BIN, else the checkout's
    build/native/bin (scripts/build-native.sh). Tests and benchmarks find the tools here too."""
    return Path(os.environ.get("SPECSWEEP_NATIVE_BIN") or Path(__file__).resolve().parents[2] / "build" / "native" / "bin")


def native_tool(name: str) -> Path | None:
    """A native llama.cpp tool, when built."""
    path = native_bin() / name
    return path if path.is_file() else None
