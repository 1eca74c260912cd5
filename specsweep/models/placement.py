"""Where a model's weights live: the placement keys, as llama.cpp's flags mean them.

- `n_cpu_moe = N` (`--n-cpu-moe N`): the experts of the *first* N layers stay in host memory, one
  override `blk\\.I\\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU` per layer I < N (common/common.h
  `LLM_FFN_EXPS_REGEX`, `llm_add_n_cpu_ffn_overrides`); `draft_n_cpu_moe` (`-ncmoed`) the same for
  a draft model or drafter.
- `override_tensor = ["REGEX=BUFTYPE", ...]` (`-ot`): a tensor whose name the regex finds
  (`std::regex_search`) goes to that buffer type, "CPU" or a device's ("CUDA0"); the first
  matching override wins, and `override_tensor` comes before `n_cpu_moe`'s overrides.
- `n_gpu_layers = N` (`-ngl N`): the last N of the model's layers (the output layer counts as one)
  on the GPU, the rest on the host.
- `vram_budget = "24GiB"` (per GPU): the `-ngl`/`-ot` llama.cpp's `-fit` would choose if the GPU had
  that much free memory (specsweep.models.fit). Fit does nothing once `-ngl` or any `-ot` is given,
  so `vram_budget` excludes the three keys above.

This module is pure (no libllama): parsing, checks against GGUF headers before anything loads,
the flags a native tool or llama-server takes (`placement_flags`), llama.cpp's load log read back,
and the `placement` block of a record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models.header import field as header_field
from specsweep.models.header import open_gguf, shard_paths

EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"  # common/common.h LLM_FFN_EXPS_REGEX
TARGET_KEYS = ("n_cpu_moe", "override_tensor", "n_gpu_layers", "vram_budget")
# buffer types -ot may name: the CPU's and a device's (llama.cpp lists each device's buffer type,
# ggml_backend_dev_buffer_type, by its name); which exist is known only once libllama is loaded
_BUFT = re.compile(r"CPU|Metal|OpenCL|(CUDA|ROCm|Vulkan|SYCL|CANN|MUSA|RPC)\d+")
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def label(keys: dict) -> str:
    """A placement as a short label: "" for llama.cpp's default (every layer on the GPU(s)), else
    its keys ("cpu-moe 20", "-ot PATTERN=CPU", "ngl 30", "fit 24GiB"): the analysis keeps records
    placed differently apart by it."""
    n_cpu_moe, ot, ngl, budget = (keys.get(k) for k in TARGET_KEYS)
    parts = [f"cpu-moe {n_cpu_moe}" if n_cpu_moe else "", "-ot " + ",".join(ot) if ot else "",
             f"ngl {ngl}" if ngl is not None else "", f"fit {budget}" if budget else ""]
    return " ".join(x for x in parts if x)


def n_cpu_moe_patterns(n: int) -> list[str]:
    """llama.cpp's --n-cpu-moe N: one pattern per layer 0..N-1."""
    return [rf"blk\.{i}{EXPS_REGEX}" for i in range(n)]


def experts_on_host(block: dict, layer: int) -> bool:
    """Whether a recorded placement (a trial's or probe's `placement` block) put layer `layer`'s
    expert tensors in host memory: the overrides the load used (a fit's own, when it chose them,
    else the keys', as load_args passes them), first match wins as in llama.cpp. llama.cpp's fit
    frees memory from the last layers, so in a GGUF with an MTP layer that layer's experts are the
    first to go."""
    from specsweep.models.memory import HOST, override_place

    fitted = (block.get("fit") or {}).get("override_tensor")
    overrides = tuple(parse_override(o, "fit") for o in fitted) if fitted else target_spec(block).overrides
    name = f"blk.{layer}.ffn_up_exps.weight"
    to = next((o.buft for o in overrides if re.search(o.pattern, name)), None)
    return to is not None and override_place(to) == HOST


@dataclass(frozen=True)
class Override:
    pattern: str
    buft: str  # a buffer type name: "CPU", "CUDA0", ...

    @property
    def text(self) -> str:
        return f"{self.pattern}={self.buft}"


def parse_override(text: object, what: str = "override_tensor") -> Override:
    """One "REGEX=BUFTYPE" (llama.cpp splits at the first '=')."""
    if not isinstance(text, str):
        raise SpecsweepError(f"{what}: {text!r} is not a string REGEX=BUFTYPE")
    pattern, sep, buft = text.partition("=")
    if not sep or not pattern:
        raise SpecsweepError(f"{what}: {text!r} is not REGEX=BUFTYPE, e.g. \"blk\\.[0-9]+\\.ffn_.*_exps=CPU\"")
    if "," in text:  # llama.cpp's -ot splits its value at commas: such a pattern cannot be passed on
        raise SpecsweepError(f"{what}: {text!r} has a comma (llama.cpp's -ot splits at commas); give one list item per override")
    if not _BUFT.fullmatch(buft):
        raise SpecsweepError(f"{what}: unknown buffer type {buft!r} in {text!r} (CPU, or a device's such as CUDA0)")
    try:
        re.compile(pattern)
    except re.error as e:
        raise SpecsweepError(f"{what}: {pattern!r} is not a regular expression ({e})") from None
    return Override(pattern, buft)


def parse_size(text: object, what: str = "vram_budget") -> int:
    """"24GiB", "24000 MiB", "25.7GB" -> bytes (KiB/MiB/GiB: powers of 2; KB/MB/GB: of 10)."""
    m = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise SpecsweepError(f"{what} = {text!r}: give a size such as \"24GiB\" or \"24000MiB\"")
    n = int(float(m[1]) * _UNITS[m[2].lower()])
    if n <= 0:
        raise SpecsweepError(f"{what} = {text!r}: must be more than nothing")
    return n


@dataclass(frozen=True)
class Spec:
    """One model's placement keys, parsed."""
    n_cpu_moe: int | None = None
    override_tensor: tuple[Override, ...] = ()
    n_gpu_layers: int | None = None
    vram_budget: int | None = None  # bytes per GPU
    vram_budget_text: str | None = None

    @property
    def overrides(self) -> tuple[Override, ...]:
        """Every override in llama.cpp's order: -ot first, then --n-cpu-moe's."""
        moe = tuple(Override(p, "CPU") for p in n_cpu_moe_patterns(self.n_cpu_moe or 0))
        return self.override_tensor + moe

    @property
    def empty(self) -> bool:
        """Nothing moves: no override (n_cpu_moe 0 is none), no -ngl, no budget."""
        return not self.overrides and self.n_gpu_layers is None and self.vram_budget is None


def target_spec(settings: dict, label: str = "") -> Spec:
    """The target's placement from a cell's (or probe's) settings; exclusive keys refused."""
    where = f"{label}: " if label else ""
    ot = settings.get("override_tensor") or []
    if not isinstance(ot, list):
        raise SpecsweepError(f"{where}override_tensor must be a list of \"REGEX=BUFTYPE\" strings")
    overrides = tuple(parse_override(o, f"{where}override_tensor") for o in ot)
    budget_text = settings.get("vram_budget")
    budget = parse_size(budget_text, f"{where}vram_budget") if budget_text is not None else None
    spec = Spec(settings.get("n_cpu_moe"), overrides, settings.get("n_gpu_layers"), budget, budget_text)
    if budget is not None:
        given = [k for k, v in (("n_gpu_layers", spec.n_gpu_layers), ("override_tensor", overrides),
                                ("n_cpu_moe", spec.n_cpu_moe or None)) if v not in (None, ())]
        if given:  # llama.cpp's fit gives up when -ngl or any -ot is set (common/fit.cpp)
            raise SpecsweepError(f"{where}vram_budget cannot be combined with {given[0]} (llama.cpp's -fit "
                                 f"does nothing once -ngl, -ot or --n-cpu-moe is given): give one or the other")
        gpus = settings.get("gpus", [0])
        if len(gpus) != 1:
            raise SpecsweepError(f"{where}vram_budget places a model on one GPU; gpus = {list(gpus)} "
                                 f"(give gpus = [N])")
    return spec


def draft_spec(settings: dict) -> Spec:
    return Spec(n_cpu_moe=settings.get("draft_n_cpu_moe"))


def check_against_header(spec: Spec, path: Path, name: str, role: str = "target", load_mtp: bool = False) -> None:
    """Refuse, before anything loads, what the GGUF header shows cannot do what was asked: an
    override pattern no tensor matches, n_cpu_moe beyond the layer count or on a model without
    experts, n_gpu_layers beyond its layers + the output layer."""
    if spec.empty:
        return
    names = loaded_tensor_names(path, name, load_mtp)
    reader = open_gguf(shard_paths(Path(path), name)[0], name)
    arch = header_field(reader, "general.architecture", "")
    n_layer = int(header_field(reader, f"{arch}.block_count", 0) or 0)
    key = "draft_n_cpu_moe" if role != "target" else "n_cpu_moe"
    for o in spec.override_tensor:
        rx = re.compile(o.pattern)
        if not any(rx.search(t) for t in names):
            raise SpecsweepError(f"override_tensor {o.text!r} matches no tensor of {role} {name} "
                                 f"(its tensors are named like {_examples(names)})")
    if spec.n_cpu_moe:
        if spec.n_cpu_moe > n_layer:
            raise SpecsweepError(f"{key} = {spec.n_cpu_moe} is beyond the {n_layer} layers of {role} {name}")
        rx = re.compile(EXPS_REGEX)
        if not any(rx.search(t) for t in names):
            raise SpecsweepError(f"{key} = {spec.n_cpu_moe}: {role} {name} has no expert tensors (not an MoE model)")
    if spec.n_gpu_layers is not None and spec.n_gpu_layers > n_layer + 1:
        raise SpecsweepError(f"n_gpu_layers = {spec.n_gpu_layers} is beyond the {n_layer} layers + the output "
                             f"layer of {role} {name} (at most {n_layer + 1})")


def loaded_tensor_names(path: Path, name: str, load_mtp: bool = False) -> list[str]:
    """The tensors llama.cpp creates: every tensor of the file but the MTP (NextN) layers', which
    it skips unless they are loaded."""
    from specsweep.models.header import trunk_layers
    paths = shard_paths(Path(path), name)
    readers = [open_gguf(p, name) for p in paths]
    trunk = trunk_layers(readers[0])
    out = []
    for r in readers:
        for t in r.tensors:
            il = layer_of(t.name)
            if il is None or il < trunk or load_mtp:
                out.append(t.name)
    return out


_BLK = re.compile(r"blk\.(\d+)\.")


def layer_of(tensor: str) -> int | None:
    m = _BLK.match(tensor)
    return int(m[1]) if m else None


def _examples(names: list[str]) -> str:
    picked = [n for n in names if n.startswith("blk.0.")][:3] or names[:3]
    return ", ".join(picked)


# --- llama.cpp's flags (llama-server, llama-speculative-simple) -------------------------------

def placement_flags(settings: dict, fitted=None) -> list[str]:
    """The llama.cpp flags a cell's placement keys map to. A vram_budget is resolved first
    (specsweep.models.fit.fit_placement -> `fitted`, a Fit) and passed on as the -ngl/-ot it chose,
    so that a native tool loads what the in-process engine loaded."""
    spec = target_spec(settings)
    flags: list[str] = []
    if spec.vram_budget is not None:
        if fitted is None:
            raise SpecsweepError("vram_budget: resolve it first (specsweep.models.fit.fit_placement)")
        if fitted.n_gpu_layers is not None:
            flags += ["-ngl", str(fitted.n_gpu_layers)]
        if fitted.overrides:
            flags += ["-ot", ",".join(o.text for o in fitted.overrides)]
    else:
        if spec.n_gpu_layers is not None:
            flags += ["-ngl", str(spec.n_gpu_layers)]
        if spec.override_tensor:
            flags += ["-ot", ",".join(o.text for o in spec.override_tensor)]
        if spec.n_cpu_moe:
            flags += ["--n-cpu-moe", str(spec.n_cpu_moe)]
    if settings.get("draft_n_cpu_moe"):
        flags += ["--spec-draft-n-cpu-moe", str(settings["draft_n_cpu_moe"])]
    return flags


# --- llama.cpp's load log, read back ------------------------------------------------------------

# src/llama-model.cpp: "load_tensors: %12s model buffer size = %8.2f MiB"
_BUFFER_LINE = re.compile(r"(\S+) model buffer size =\s*([0-9.]+) MiB")
# src/llama-model-loader.cpp (debug level): "tensor %s (%zu MiB %s) buffer type overridden to %s"
_OVERRIDE_LINE = re.compile(r"tensor (\S+) \(.*\) buffer type overridden to (\S+)")


@dataclass
class Loaded:
    """What llama.cpp reports it did while loading one model."""
    buffers: dict[str, int] = field(default_factory=dict)  # buffer name -> bytes (logged to 0.01 MiB)
    overridden: dict[str, str] = field(default_factory=dict)  # tensor -> the buffer type it went to

    @property
    def host_bytes(self) -> int:
        return sum(b for n, b in self.buffers.items() if is_host_buffer(n))

    @property
    def device_bytes(self) -> dict[str, int]:
        return {n: b for n, b in self.buffers.items() if not is_host_buffer(n)}


def is_host_buffer(name: str) -> bool:
    """CPU, CPU_Mapped, CPU_REPACK, CUDA_Host (pinned host memory), ... live in host memory."""
    return name.startswith("CPU") or name.endswith("_Host")


def read_load_log(lines) -> Loaded:
    out = Loaded()
    for line in lines:
        m = _BUFFER_LINE.search(line)
        if m:
            out.buffers[m[1]] = out.buffers.get(m[1], 0) + round(float(m[2]) * 2**20)
            continue
        m = _OVERRIDE_LINE.search(line)
        if m:
            out.overridden[m[1]] = m[2]
    return out


def load_args(spec: Spec, fitted=None) -> dict:
    """runtime.Model's placement arguments: the keys', or what a vram_budget's fit chose."""
    if fitted is not None:
        return {"tensor_overrides": fitted.overrides, "n_gpu_layers": fitted.n_gpu_layers}
    return {"tensor_overrides": spec.overrides, "n_gpu_layers": spec.n_gpu_layers}


def smallest_n_cpu_moe(path: Path, fits, gpus, shares=(), kv_type: str = "q8_0", n_ctx: int = 4096,
                       load_mtp: bool = False):
    """The fewest layers whose experts must go to the host (--n-cpu-moe N) for `fits(PlacementMemory)`
    to hold, with that placement's estimate: (N, memory), or None when even every layer's experts on
    the host do not fit (or the model has no experts). A bisection: what stays on the GPU only
    shrinks as N grows."""
    from specsweep.models.memory import placement_memory

    def at(n: int):
        return placement_memory(path, tuple(Override(p, "CPU") for p in n_cpu_moe_patterns(n)), None, tuple(gpus),
                                tuple(shares), kv_type, n_ctx, load_mtp=load_mtp)

    names = loaded_tensor_names(path, path.name, load_mtp)
    layers = sorted({il for t in names if re.search(EXPS_REGEX, t) and (il := layer_of(t)) is not None})
    if not layers:
        return None
    lo, hi = 1, layers[-1] + 1
    best = at(hi)
    if not fits(best):
        return None
    while lo < hi:  # the smallest N in [lo, hi] that fits; hi fits
        mid = (lo + hi) // 2
        pm = at(mid)
        if fits(pm):
            hi, best = mid, pm
        else:
            lo = mid + 1
    return hi, best


def estimate(path: Path, args: dict, gpus, shares=(), load_mtp: bool = False) -> dict:
    """The header's estimate of where the weights go under `args` (load_args), beside what
    llama.cpp reports: bytes per place ("host", "GPU0", ...) and the tensors an override moves."""
    from specsweep.models.memory import placement_memory
    pm = placement_memory(path, args["tensor_overrides"], args["n_gpu_layers"], tuple(gpus), tuple(shares),
                          load_mtp=load_mtp)
    return {"weights": pm.weights, "overridden_tensors": len(pm.overridden)}


def record_block(spec: Spec, loaded: Loaded | None, fitted=None, estimated: dict | None = None,
                 draft: bool = False) -> dict:
    """The `placement` block of a record: the keys, what a vram_budget resolved to, and the bytes
    llama.cpp put in each buffer (host and devices) with the tensors an override moved."""
    block = {"n_cpu_moe": spec.n_cpu_moe, "override_tensor": [o.text for o in spec.override_tensor],
             "n_gpu_layers": spec.n_gpu_layers, "vram_budget": spec.vram_budget_text}
    if draft:  # a draft model's only key (draft_n_cpu_moe)
        block = {"n_cpu_moe": spec.n_cpu_moe}
    if fitted is not None:
        block["fit"] = fitted.record()
    if estimated is not None:
        block["estimate"] = estimated
    if loaded is not None:
        by_buft: dict[str, int] = {}
        for buft in loaded.overridden.values():
            by_buft[buft] = by_buft.get(buft, 0) + 1
        block.update({"buffers": dict(loaded.buffers), "host_bytes": loaded.host_bytes,
                      "device_bytes": loaded.device_bytes, "overridden_tensors": len(loaded.overridden),
                      "overridden_to": by_buft})
    return block


def describe(block: dict) -> str:
    """One line: the bytes llama.cpp put in each buffer, the overrides it applied, a fit's choice."""
    bufs = ", ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in block.get("buffers", {}).items()) or "no buffers logged"
    line = f"placement: {bufs}; {block.get('overridden_tensors', 0)} tensors overridden"
    fit = block.get("fit")
    if fit:
        ngl = "all" if fit["n_gpu_layers"] is None else fit["n_gpu_layers"]
        line += (f"; vram_budget {block['vram_budget']} -> -ngl {ngl}, {len(fit['override_tensor'])} -ot patterns "
                 f"({fit['source']})")
    return line
