"""Which experts a MoE target's router chose, read out of llama.cpp's graph while it runs.

llama.cpp names the router's choice of every MoE layer `ffn_moe_topk-<layer>` (`build_moe_ffn` in
src/llama-graph.cpp): an I32 view of the first k columns of `ffn_moe_argsort-<layer>`, one row per
token of the ubatch (ne = [k, n_tokens]; rows are E x 4 bytes apart, so they are read by nb[1]).
A context created with `cb_eval` (llama_context_params) is asked about every node of every graph
split (`ask` true) and, for the nodes it wants, called again once the node is computed; the tensor
is then read with ggml's own `ggml_backend_tensor_get_2d` from libggml-base (llama-cpp-python does
not wrap it), which copies from any backend's buffer, a GPU's included.

Why tracing never runs in a timed pass: a context with `cb_eval` computes each split node range by
node range with a device sync after each observed node, and observing the top-k view splits CUDA's
fused top-k MoE kernel. The callback is fixed when the context is created, so the trace runs in a
context of its own that replays what the timed context did (`replay`, from its `Journal`) after
the trial: same tokens at the same positions, the same rollbacks, so the same hidden states reach
the router. The replay also re-reads every output the loop read and counts disagreements, which
says whether the replay saw what the timed pass saw.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as ll
import numpy as np

from specsweep.engine import interrupts
from specsweep.errors import SpecsweepError

TOPK_PREFIX = b"ffn_moe_topk-"
_GGML_MAX_DIMS, _GGML_MAX_OP_PARAMS, _GGML_MAX_SRC, _GGML_MAX_NAME = 4, 64, 10, 64
_GGML_OBJECT_SIZE = 32  # struct ggml_object: offs, size, next, type + 4 bytes of padding


class _GgmlTensor(ctypes.Structure):
    """struct ggml_tensor (ggml/include/ggml.h of the llama.cpp llama-cpp-python 0.3.36 compiles);
    its size is checked against the library's own at first use."""
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
                ("ne", ctypes.c_int64 * _GGML_MAX_DIMS), ("nb", ctypes.c_size_t * _GGML_MAX_DIMS),
                ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * (_GGML_MAX_OP_PARAMS // 4)),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * _GGML_MAX_SRC),
                ("view_src", ctypes.c_void_p), ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p),
                ("name", ctypes.c_char * _GGML_MAX_NAME), ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


_NAME_AT = _GgmlTensor.name.offset
_ggml: dict[str, object] = {}


def _ggml_base():
    """ggml-base's tensor reader, bound once from the library beside the loaded libllama."""
    if not _ggml:
        lib_dir = Path(ll.llama_cpp._lib._name).resolve().parent
        try:
            lib = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
            get_2d, overhead = lib.ggml_backend_tensor_get_2d, lib.ggml_tensor_overhead
        except (OSError, AttributeError) as e:
            raise SpecsweepError(f"tracing experts needs ggml's tensor reader from libggml-base beside "
                                 f"libllama ({lib_dir}): {e}") from None
        get_2d.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                           ctypes.c_size_t, ctypes.c_size_t]
        get_2d.restype = None
        overhead.restype = ctypes.c_size_t
        if overhead() - _GGML_OBJECT_SIZE != ctypes.sizeof(_GgmlTensor):
            raise SpecsweepError("this libggml's struct ggml_tensor differs from the one specsweep reads; "
                                 "tracing experts needs the llama.cpp that llama-cpp-python 0.3.36 compiles")
        _ggml["get_2d"] = get_2d
    return _ggml["get_2d"]


class ExpertTracer:
    """The eval callback of a traced context: collects each MoE layer's chosen experts per pass."""

    def __init__(self):
        self._get_2d = _ggml_base()
        self.callback = ll.ggml_backend_sched_eval_callback(self._on_node)  # kept alive with the tracer
        self.rows: dict[int, list[np.ndarray]] = {}  # layer -> (n_tokens, k) arrays of this pass's ubatches
        self.error: BaseException | None = None

    def _on_node(self, t, ask, _user_data) -> bool:
        # a Ctrl-C or SIGTERM arriving in here would be lost by ctypes: it waits for the decode's end
        with interrupts.in_callback():
            if ask:
                return ctypes.string_at(t + _NAME_AT, len(TOPK_PREFIX)) == TOPK_PREFIX
            try:  # an exception cannot cross the C boundary: keep it for `take`
                tensor = _GgmlTensor.from_address(t)
                k, n = int(tensor.ne[0]), int(tensor.ne[1])
                out = np.empty((n, k), dtype=np.int32)
                self._get_2d(t, out.ctypes.data, 0, k * 4, n, int(tensor.nb[1]), k * 4)
                layer = int(tensor.name.rsplit(b"-", 1)[1])
                self.rows.setdefault(layer, []).append(out)
            except Exception as e:  # noqa: BLE001
                self.error = e
            return True

    def take(self) -> dict[int, np.ndarray]:
        """The experts each MoE layer chose since the last take: layer -> (n_tokens, k) array."""
        if self.error is not None:
            error, self.error = self.error, None
            raise SpecsweepError(f"reading the router's choice failed: {error}")
        rows, self.rows = self.rows, {}
        return {layer: np.concatenate(parts) for layer, parts in sorted(rows.items())}


# --- what the timed context did, and its replay ---

@dataclass
class Journal:
    """The memory operations and output reads of one context, in order: ("decode", tokens, pos0,
    all_logits), ("seq_rm", p0, p1), ("save",), ("load",), ("clear",), ("out", i, token). One stream
    (sequence 0): traced cells run one stream."""
    ops: list[tuple] = field(default_factory=list)


@dataclass
class TracedPass:
    kind: str  # "prefill", "verify" (a draft checked), "plain" (one token), "redecode" (after a rollback)
    n_tokens: int
    n_distinct: int  # distinct token ids among them (a token repeated nearby routes alike)
    experts: dict[int, np.ndarray]  # layer -> (n_tokens routed, k) expert ids

    def unions(self, layers: list[int]) -> list[int]:
        """Distinct experts each layer read in this pass."""
        return [len(np.unique(self.experts[il])) if il in self.experts else 0 for il in layers]


@dataclass
class Replay:
    passes: list[TracedPass]
    outputs_checked: int
    mismatches: int
    seconds: float


def replay(journal: Journal, ctx, tracer: ExpertTracer) -> Replay:
    """Run a journal again in `ctx` (a context created with `tracer.callback`, memory empty) and
    collect the experts of every decode. Decodes before the loop's first output read are the
    prompt; after it, a pass of one token is a plain step, a pass right after a checkpoint
    restore re-decodes accepted tokens, and any other pass verifies a draft. (The simple loop
    decodes its first verify before reading an output: every loop decode asks for all logits, the
    prompt's never do, so an all-logits decode is never the prompt.)"""
    t0 = time.perf_counter()
    passes: list[TracedPass] = []
    checkpoint = None
    generating = after_load = False
    checked = mismatches = 0
    tracer.take()
    for op in journal.ops:
        what = op[0]
        if what == "decode":
            _, tokens, pos0, all_logits = op
            ctx.decode(list(tokens), pos0, all_logits=all_logits)
            ctx.sync()
            generating = generating or all_logits
            kind = ("prefill" if not generating else "redecode" if after_load else
                    "plain" if len(tokens) == 1 else "verify")
            passes.append(TracedPass(kind, len(tokens), len(set(tokens)), tracer.take()))
            after_load = False
        elif what == "out":
            generating = True
            checked += 1
            mismatches += ctx.argmax(op[1]) != op[2]
        elif what == "seq_rm":
            ctx.seq_rm(op[1], op[2])
        elif what == "save":
            checkpoint = ctx.save_partial_state()
        elif what == "load":
            ctx.load_partial_state(checkpoint)
            after_load = True
        elif what == "clear":
            ctx.clear()
    return Replay(passes, checked, mismatches, time.perf_counter() - t0)
