"""A thin, quiet layer over libllama's C API (llama-cpp-python's ctypes bindings).

Only what the engine needs: load a model, make a context, tokenize, decode a batch, read logits.
llama.cpp's own log lines are captured instead of printed (shown with `verbose=True`), and the
last error lines it logged are kept so that a failure becomes a one-line message.
"""

from __future__ import annotations

import collections
import ctypes
import sys
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll
import numpy as np

from specsweep.errors import SpecsweepError

_GGML_LOG_ERROR = 3
_state = {"init": False, "verbose": False}
_recent = collections.deque(maxlen=20)  # the last lines llama.cpp logged, for error messages


@ll.llama_log_callback
def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", errors="replace")
    if _state["verbose"]:
        print(line, end="", flush=True, file=sys.stderr)
    if level == _GGML_LOG_ERROR and line.strip():
        _recent.append(line.strip())


def init(verbose: bool = False) -> None:
    _state["verbose"] = verbose
    if not _state["init"]:
        ll.llama_log_set(_log, ctypes.c_void_p(0))
        ll.llama_backend_init()
        _state["init"] = True


def last_error(default: str) -> str:
    return _recent[-1] if _recent else default


KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2, "f32": 0}  # ggml_type values


@dataclass(frozen=True)
class ContextOptions:
    n_ctx: int = 2048
    n_batch: int = 512
    type_kv: str = "f16"
    flash_attn: bool = True
    n_threads: int = 0  # 0: llama.cpp's default
    n_seq_max: int = 1
    n_rs_seq: int = 0  # recurrent-state snapshots kept per sequence (hybrid rollback)


class Model:
    def __init__(self, path: Path, n_gpu_layers: int = -1):
        init(_state["verbose"])
        path = Path(path)
        if not path.is_file():
            raise SpecsweepError(f"model file not found: {path}")
        params = ll.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        _recent.clear()
        self.ptr = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise SpecsweepError(f"llama.cpp could not load {path}: {last_error('unknown error')}")
        self.path = path
        self.vocab = ll.llama_model_get_vocab(self.ptr)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, False, parse_special)
        if n < 0:
            raise SpecsweepError(f"could not tokenize a prompt of {len(data)} bytes")
        return list(buf[:n])

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int) -> str:
        buf = ctypes.create_string_buffer(256)
        n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def close(self) -> None:
        if getattr(self, "ptr", None):
            ll.llama_model_free(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Context:
    def __init__(self, model: Model, opts: ContextOptions = ContextOptions()):
        params = ll.llama_context_default_params()
        params.n_ctx = opts.n_ctx
        params.n_batch = params.n_ubatch = opts.n_batch
        params.n_seq_max = opts.n_seq_max
        params.n_rs_seq = opts.n_rs_seq
        # a verify batch needs a logit row per token (llama.cpp otherwise caps outputs per sequence)
        params.n_outputs_max = params.n_outputs_max_per_seq = opts.n_batch
        params.type_k = params.type_v = KV_TYPES[opts.type_kv]
        params.flash_attn_type = 1 if opts.flash_attn else 0
        params.no_perf = True
        if opts.n_threads:
            params.n_threads = params.n_threads_batch = opts.n_threads
        _recent.clear()
        self.ptr = ll.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise SpecsweepError(f"llama.cpp could not create a context of {opts.n_ctx} tokens for "
                                 f"{model.path.name}: {last_error('out of memory?')}")
        self.model = model
        self.opts = opts
        self.n_vocab = model.n_vocab
        self._batch = ll.llama_batch_init(opts.n_batch, 0, 1)

    def decode(self, tokens: list[int], pos0: int, all_logits: bool = False, seq: int = 0) -> None:
        """Decode tokens at positions pos0.. in one batch; logits for the last one (or all)."""
        if len(tokens) > self.opts.n_batch:
            raise ValueError(f"batch of {len(tokens)} exceeds n_batch {self.opts.n_batch}")
        b = self._batch
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = all_logits or i == len(tokens) - 1
        rc = ll.llama_decode(self.ptr, b)
        if rc != 0:
            raise SpecsweepError(f"llama_decode failed ({rc}): {last_error('see --verbose')}")

    def sync(self) -> None:
        """Wait for the device: llama_decode returns before a GPU has finished."""
        ll.llama_synchronize(self.ptr)

    def logits(self, i: int = -1) -> np.ndarray:
        ptr = ll.llama_get_logits_ith(self.ptr, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def argmax(self, i: int = -1) -> int:
        return int(self.logits(i).argmax())

    # --- memory: what rollback after a rejected draft is made of ---
    def seq_rm(self, p0: int, p1: int = -1, seq: int = 0) -> bool:
        """Drop positions [p0, p1) of a sequence; False where the memory cannot (recurrent state)."""
        return bool(ll.llama_memory_seq_rm(ll.llama_get_memory(self.ptr), seq, p0, p1))

    def pos_max(self, seq: int = 0) -> int:
        return int(ll.llama_memory_seq_pos_max(ll.llama_get_memory(self.ptr), seq))

    def clear(self) -> None:
        ll.llama_memory_clear(ll.llama_get_memory(self.ptr), True)

    def save_partial_state(self, seq: int = 0) -> bytes:
        """The recurrent (non-KV) state of a sequence: llama.cpp's checkpoint for hybrid models."""
        flags = ll.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        size = ll.llama_state_seq_get_size_ext(self.ptr, seq, flags)
        buf = (ctypes.c_uint8 * size)()
        ll.llama_state_seq_get_data_ext(self.ptr, buf, size, seq, flags)
        return bytes(buf)

    def load_partial_state(self, data: bytes, seq: int = 0) -> None:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if ll.llama_state_seq_set_data_ext(self.ptr, buf, len(data), seq, ll.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY) == 0:
            raise SpecsweepError(f"could not restore a checkpoint: {last_error('see --verbose')}")

    def can_remove_partially(self, count_snapshots: bool = True) -> bool:
        """Can a plain seq_rm drop the tail of a sequence? (False for hybrid/recurrent memory
        without snapshots: llama.cpp then rolls back through checkpoints.) Clears the memory."""
        if count_snapshots and self.opts.n_rs_seq > 0 and ll.llama_n_rs_seq(self.ptr) > 0:
            return True
        self.clear()
        self.decode([0, 0], 0)
        ok = self.seq_rm(1, -1)
        self.clear()
        return ok

    def close(self) -> None:
        if getattr(self, "ptr", None):
            ll.llama_batch_free(self._batch)
            ll.llama_free(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def greedy(model: Model, prompt: list[int], n_predict: int, opts: ContextOptions = ContextOptions()) -> list[int]:
    """Plain greedy decoding: the reference every speculative run must reproduce."""
    out: list[int] = []
    with Context(model, opts) as ctx:
        ctx.decode(prompt, 0)
        for _ in range(n_predict):
            out.append(ctx.argmax())
            ctx.decode([out[-1]], len(prompt) + len(out) - 1)
    return out


def teacher_forced_argmax(model: Model, tokens: list[int], opts: ContextOptions = ContextOptions()) -> list[int]:
    """The model's greedy choice after each prefix of `tokens` (one batch, all logits)."""
    with Context(model, opts) as ctx:
        ctx.decode(tokens, 0, all_logits=True)
        return [ctx.argmax(i) for i in range(len(tokens))]
