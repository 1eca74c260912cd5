"""How much memory a cell needs, from GGUF headers, against what the device has free.

For each model of a cell: the weights (every tensor's size in the header, all shards of a split
GGUF), the KV cache and, for hybrid models, the recurrent state, sized as llama.cpp sizes them:

- KV cache: n_ctx rounded up to 256 cells (llama_context pads it), times every attention layer's
  n_head_kv * (key_length + value_length) elements, at the KV type (q8_0: 34 bytes per 32
  elements, f16: 2 bytes). In qwen35/qwen35moe only every `full_attention_interval`-th layer (or
  the layers `attention.recurrent_layers` leaves out) has attention; MTP (nextn) layers are not
  loaded and not counted.
- recurrent state (gated delta net layers), f32, per sequence: conv (d_conv - 1) * (d_inner +
  2 * n_group * d_state) plus ssm d_state * d_inner (llama_hparams::n_embd_r / n_embd_s).

Not counted: llama.cpp's compute buffers (hundreds of MiB on large models, depending on n_batch)
and the CPU repack copies, so treat a fit within ~10% as tight. The estimate for the tiny cards
matches llama.cpp's own `llama_kv_cache: size` and `llama_memory_recurrent: size` log lines.

Per placement (`placement_memory`): the same bytes split between each GPU and the host under
n_gpu_layers and tensor overrides (specsweep.models.placement), tensor by tensor as llama.cpp's
loader assigns them; its list of overridden tensors is what llama.cpp logs when it loads.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import gguf

from specsweep.errors import SpecsweepError
from specsweep.models.header import field, open_gguf, shard_paths, trunk_layers

KV_TYPES = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
            "q4_0": gguf.GGMLQuantizationType.Q4_0, "q4_1": gguf.GGMLQuantizationType.Q4_1,
            "q5_0": gguf.GGMLQuantizationType.Q5_0, "q5_1": gguf.GGMLQuantizationType.Q5_1,
            "iq4_nl": gguf.GGMLQuantizationType.IQ4_NL}
HYBRID_ARCHES = {"qwen35", "qwen35moe", "qwen3next"}
CTX_PAD = 256
TIGHT = 0.9  # warn above this share of the free memory: compute buffers are not in the estimate


@dataclass(frozen=True)
class ModelMemory:
    path: Path
    weights: int
    kv: int
    recurrent: int
    n_attn_layers: int
    n_recurrent_layers: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.recurrent


def _bytes(n_elements: int, kv_type: str) -> int:
    try:
        qtype = KV_TYPES[kv_type]
    except KeyError:
        raise SpecsweepError(f"unknown KV cache type {kv_type!r} (one of {', '.join(KV_TYPES)})") from None
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return -(-n_elements // block) * size


def _per_layer(value, n_layer: int) -> list[int]:
    if isinstance(value, list):
        return [int(x) for x in value][:n_layer] + [0] * max(0, n_layer - len(value))
    return [int(value or 0)] * n_layer


def model_memory(path: Path, kv_type: str = "q8_0", n_ctx: int = 4096, n_seq: int = 1,
                 name: str | None = None, load_mtp: bool = False) -> ModelMemory:
    """Weights + KV cache + recurrent state of one model, in bytes. The weights are those llama.cpp
    loads: a file's MTP (NextN) layers only with `load_mtp` (a cell of method mtp)."""
    from specsweep.models.placement import layer_of

    name = name or Path(path).name
    readers = [open_gguf(p, name) for p in shard_paths(Path(path), name)]
    trunk = trunk_layers(readers[0])
    weights = sum(int(t.n_bytes) for r in readers for t in r.tensors
                  if load_mtp or (il := layer_of(t.name)) is None or il < trunk)
    state = layer_state(readers[0], kv_type, n_ctx, n_seq, name, path)
    return ModelMemory(Path(path), weights, sum(state.kv), sum(state.recurrent),
                       sum(1 for b in state.kv if b), sum(1 for b in state.recurrent if b))


@dataclass(frozen=True)
class LayerState:
    kv: list[int]  # KV cache bytes per trunk layer (0 for a recurrent layer)
    recurrent: list[int]  # recurrent-state bytes per trunk layer (0 for an attention layer)


def layer_state(r, kv_type: str, n_ctx: int, n_seq: int, name: str, path) -> LayerState:
    """Per trunk layer: its KV cache or its recurrent state, sized as llama.cpp sizes them."""
    arch = field(r, "general.architecture")
    if not isinstance(arch, str):
        raise SpecsweepError(f"model {name}: {path} has no general.architecture in its header")

    def key(k, default=None):
        return field(r, f"{arch}.{k}", default)

    n_layer = trunk_layers(r)
    n_head = _per_layer(key("attention.head_count", 0), n_layer)
    n_head_kv = _per_layer(key("attention.head_count_kv", None) or key("attention.head_count", 0), n_layer)
    n_embd = int(key("embedding_length", 0) or 0)
    head_k = key("attention.key_length")
    head_v = key("attention.value_length")

    recurrent = [False] * n_layer
    if arch in HYBRID_ARCHES:
        explicit = key("attention.recurrent_layers")
        if isinstance(explicit, list):
            recurrent = [bool(x) for x in explicit][:n_layer]
        else:
            interval = int(key("full_attention_interval", 4) or 4)
            recurrent = [(il + 1) % interval != 0 for il in range(n_layer)]

    n_ctx_pad = -(-max(1, n_ctx) // CTX_PAD) * CTX_PAD
    kv = [0] * n_layer
    for il in range(n_layer):
        if recurrent[il] or n_head_kv[il] == 0:
            continue
        hk = int(head_k) if head_k else (n_embd // n_head[il] if n_head[il] else 0)
        hv = int(head_v) if head_v else hk
        kv[il] = _bytes(n_head_kv[il] * (hk + hv) * n_ctx_pad, kv_type)

    rec = [0] * n_layer
    if any(recurrent):
        d_conv = int(key("ssm.conv_kernel", 0) or 0)
        d_inner = int(key("ssm.inner_size", 0) or 0)
        d_state = int(key("ssm.state_size", 0) or 0)
        n_group = int(key("ssm.group_count", 0) or 0)
        r_elems = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)
        s_elems = d_state * d_inner
        rec = [(r_elems + s_elems) * 4 * max(1, n_seq) if recurrent[il] else 0 for il in range(n_layer)]
    return LayerState(kv, rec)


def estimate_cell_bytes(model_paths: Iterable[Path], kv_type: str = "q8_0", n_ctx: int = 4096,
                        n_seq: int = 1, load_mtp: bool = False) -> int:
    """Bytes a cell needs: each model's weights once (a draft that is the target's file shares them;
    a file's MTP layers only with `load_mtp`), and a KV cache and recurrent state per model (each
    has its own context)."""
    total, seen = 0, set()
    for p in model_paths:
        m = model_memory(Path(p), kv_type, n_ctx, n_seq, load_mtp=load_mtp)
        real = os.path.realpath(p)
        total += m.kv + m.recurrent + (0 if real in seen else m.weights)
        seen.add(real)
    return total


# --- per placement: which memory each tensor and each layer's cache lands in ---------------------

HOST = "host"


@dataclass(frozen=True)
class PlacementMemory:
    """One model's bytes per place ("host", "GPU0", ...) under a placement, as llama.cpp's loader
    decides it (src/llama-model.cpp load_tensors): the input layer (token embeddings) always on the
    host; of the block_count layers and the output layer (together n_layer + 1) the last
    n_gpu_layers on the GPU(s), split over several by their shares; then every tensor an override
    matches (the first matching one) in that override's memory. A layer's KV cache or recurrent
    state lives with the layer. Compute buffers are not counted (see the module's note)."""
    weights: dict[str, int]
    state: dict[str, int]
    where: dict[str, str]  # tensor -> place
    overridden: dict[str, str]  # tensor -> place, for the tensors an override moved (llama.cpp logs them)
    n_gpu_layers: int  # as llama.cpp resolves it (a negative value: every layer)

    def bytes_on(self, place: str) -> int:
        return self.weights.get(place, 0) + self.state.get(place, 0)

    @property
    def host(self) -> int:
        return self.bytes_on(HOST)

    @property
    def devices(self) -> dict[str, int]:
        return {p: self.bytes_on(p) for p in sorted(set(self.weights) | set(self.state)) if p != HOST}


def override_place(buft: str) -> str:
    """An -ot buffer type's memory: "CPU" the host, a device's ("CUDA1") that GPU."""
    digits = re.search(r"(\d+)$", buft)
    return HOST if buft == "CPU" or not digits else f"GPU{int(digits[1])}"


def placement_memory(path: Path, overrides: Sequence = (), n_gpu_layers: int | None = None,
                     gpus: Sequence[int] = (0,), shares: Sequence[float] = (), kv_type: str = "q8_0",
                     n_ctx: int = 4096, n_seq: int = 1, load_mtp: bool = False,
                     name: str | None = None) -> PlacementMemory:
    """Bytes on each GPU and on the host for one model under a placement. `overrides`: objects
    with .pattern and .buft (models.placement.Override), in llama.cpp's order; `n_gpu_layers`
    None or negative: every layer; `gpus` () the CPU only; `shares` the split over several GPUs
    (even when empty)."""
    from specsweep.models.placement import layer_of, loaded_tensor_names

    name = name or Path(path).name
    readers = [open_gguf(p, name) for p in shard_paths(Path(path), name)]
    r = readers[0]
    arch = field(r, "general.architecture", "")
    n_layer_all = int(field(r, f"{arch}.block_count", 0) or 0)
    ngl = n_layer_all + 1 if n_gpu_layers is None or n_gpu_layers < 0 else n_gpu_layers
    i_gpu_start = max(n_layer_all + 1 - ngl, 0)
    act = min(ngl, n_layer_all + 1) if gpus else 0
    shares = list(shares) or [1.0] * len(gpus)
    splits = list(itertools.accumulate(shares))
    splits = [x / splits[-1] for x in splits] if splits and splits[-1] > 0 else splits

    def layer_place(il: int) -> str:
        if il < i_gpu_start or il - i_gpu_start >= act:
            return HOST
        # llama.cpp: std::upper_bound over the cumulative shares
        k = bisect.bisect_right(splits, (il - i_gpu_start) / act)
        return f"GPU{gpus[min(k, len(gpus) - 1)]}"

    sizes = {t.name: int(t.n_bytes) for rd in readers for t in rd.tensors}
    loaded = loaded_tensor_names(path, name, load_mtp)
    compiled = [(re.compile(o.pattern), override_place(o.buft)) for o in overrides]
    where, overridden = {}, {}
    weights: dict[str, int] = {}
    for t in loaded:
        il = layer_of(t)
        if il is not None:
            place = layer_place(il)
        elif t.startswith(("output", "cls")):  # the output layer: llama.cpp's layer n_layer_all
            place = layer_place(n_layer_all)
        else:  # token embeddings: the input layer stays on the CPU
            place = HOST
        for rx, to in compiled:
            if rx.search(t):
                place = overridden[t] = to
                break
        where[t] = place
        weights[place] = weights.get(place, 0) + sizes[t]
    if "output.weight" not in sizes and "token_embd.weight" in sizes:
        # tied embeddings: llama.cpp duplicates token_embd as the output head, in the output layer's memory
        out = layer_place(n_layer_all)
        if out != HOST:
            weights[out] = weights.get(out, 0) + sizes["token_embd.weight"]

    st = layer_state(r, kv_type, n_ctx, n_seq, name, path)
    state: dict[str, int] = {}
    for il, b in enumerate(map(sum, zip(st.kv, st.recurrent))):
        if b:
            state[layer_place(il)] = state.get(layer_place(il), 0) + b
    return PlacementMemory(weights, state, where, overridden, ngl)


# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreeMemory:
    bytes: int
    where: str  # "GPU 0 (nvidia-smi)", "host (MemAvailable)"


def nvidia_smi_free() -> list[int] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return [int(float(line.strip())) * 2**20 for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def free_device_memory(gpus: Sequence[int] | None = (0,)) -> FreeMemory:
    """Free memory where a cell's models go: the listed GPUs (summed: layers split over them) by
    nvidia-smi, or the host's MemAvailable for a CPU run (`gpus=[]`) or when nvidia-smi is absent."""
    if gpus:
        free = nvidia_smi_free()
        if free:
            picked = [i for i in gpus if 0 <= i < len(free)]
            if picked:
                return FreeMemory(sum(free[i] for i in picked), "GPU " + ", ".join(map(str, picked)) + " (nvidia-smi)")
    return FreeMemory(_host_available(), "host (MemAvailable)")


def free_device_bytes(gpus: Sequence[int] | None = (0,)) -> int:
    return free_device_memory(gpus).bytes


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def fit_warning(label: str, needed: int, free: FreeMemory) -> str | None:
    """A warning when a cell cannot fit (or fits only without room for llama.cpp's compute buffers)."""
    if needed > free.bytes:
        return f"{label} needs about {gib(needed)} (weights + KV + state) but {free.where} has {gib(free.bytes)} free"
    if needed > TIGHT * free.bytes:
        return (f"{label} needs about {gib(needed)} of the {gib(free.bytes)} free on {free.where}; compute buffers "
                f"are not counted and may not fit")
    return None
