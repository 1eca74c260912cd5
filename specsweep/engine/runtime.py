"""A thin, quiet layer over libllama's C API (llama-cpp-python's ctypes bindings).

Only what the engine needs: load a model, make a context, tokenize, decode a batch, read logits.
llama.cpp's own log lines are captured instead of printed (shown with `verbose=True`), and the
last error lines it logged are kept so that a failure becomes a one-line message.
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll
import numpy as np

from specsweep.engine import buffer_types, ext, hot, interrupts
from specsweep.errors import SpecsweepError
from specsweep.models import overrides as kv
from specsweep.models import placement

_GGML_LOG_WARN, _GGML_LOG_ERROR = 3, 4  # ggml_log_level
_state = {"init": False, "verbose": False, "capture": None}  # capture: a list taking every line (a load's log)
_recent = collections.deque(maxlen=20)  # the last lines llama.cpp logged, for error messages


@ll.llama_log_callback
@interrupts.guarded(lambda *_: None)  # an interrupt raised in here would be dropped by ctypes
def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", errors="replace")
    if _state["verbose"]:
        print(line, end="", flush=True, file=sys.stderr)
    if level in (_GGML_LOG_WARN, _GGML_LOG_ERROR) and line.strip():
        _recent.append((level, line.strip()))
    if _state["capture"] is not None:
        _state["capture"].append(line)


def _loaded_then_check(obj) -> None:
    """An interrupt that came while llama.cpp loaded: free what it made, then raise it."""
    try:
        interrupts.check()
    except KeyboardInterrupt:
        obj.close()
        raise


def init(verbose: bool = False) -> None:
    _state["verbose"] = verbose
    if not _state["init"]:
        ll.llama_log_set(_log, ctypes.c_void_p(0))
        ll.llama_backend_init()
        _state["init"] = True


def last_error(default: str) -> str:
    """What llama.cpp said went wrong since the call began: its first error line (the cause; later
    ones only say "failed to load model"), else its last warning, else `default`."""
    for level, line in _recent:
        if level == _GGML_LOG_ERROR:
            return line
    for level, line in reversed(_recent):
        if level == _GGML_LOG_WARN:
            return line
    return default


def default_threads() -> int:
    """Every CPU this process may use (llama.cpp's context default, 4, starves or oversubscribes)."""
    return len(os.sched_getaffinity(0))


KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2, "f32": 0}  # ggml_type values


@dataclass(frozen=True)
class ContextOptions:
    n_ctx: int = 2048
    n_batch: int = 512
    type_kv: str = "f16"
    flash_attn: bool = True
    n_threads: int = 0  # 0: every CPU this process may use (llama.cpp's context default is 4)
    n_seq_max: int = 1
    n_rs_seq: int = 0  # recurrent-state snapshots kept per sequence (hybrid rollback)
    # greedy selection on the device (llama.cpp's backend sampling): only token ids come back,
    # not a full row of logits per verified token
    backend_sampling: bool = False
    # "mtp": a context that runs the model's multi-token-prediction head (llama.cpp's
    # LLAMA_CONTEXT_TYPE_MTP) instead of its trunk
    ctx_type: str = "default"
    # llama.cpp's --ignore-eos: end-of-generation tokens get -inf logits in the target's sampling
    # (on the device sampler too), so every trial generates n_predict tokens
    ignore_eos: bool = False
    # output rows a batch may ask for (logits, sampled ids, hidden states); 0: n_batch. llama.cpp's
    # tools size it to what a step needs (common_speculative_get_output_limits): 1 + the draft limit
    # for a target, 1 for a draft model or MTP head, 1 + n_max for a DFlash block. Each row costs a
    # vocabulary of floats (twice with backend sampling): 512 rows of a 248k vocabulary are ~1 GB
    n_outputs: int = 0


CONTEXT_TYPES = {"default": ll.LLAMA_CONTEXT_TYPE_DEFAULT, "mtp": ll.LLAMA_CONTEXT_TYPE_MTP}


SPLIT_MODES = {"layer": ll.LLAMA_SPLIT_MODE_LAYER, "row": ll.LLAMA_SPLIT_MODE_ROW,
               "tensor": ll.LLAMA_SPLIT_MODE_TENSOR}


@dataclass(frozen=True)
class Placement:
    """llama_model_params' device fields for a layout."""
    n_gpu_layers: int
    split_mode: int
    main_gpu: int
    tensor_split: tuple[float, ...]  # one share per llama.cpp device index; () leaves it unset


def gpu_placement(gpus: tuple[int, ...], split_mode: str = "layer", ratios: tuple[float, ...] = (),
                  n_devices: int = 16) -> Placement:
    """Map specsweep's layout onto llama.cpp's model parameters: no GPU -> no layers offloaded; one
    GPU -> split mode none with that GPU as main; several -> `split_mode` over exactly those GPUs,
    shares `ratios` (even when empty) at their device indices and 0 elsewhere."""
    if not gpus:
        return Placement(0, ll.LLAMA_SPLIT_MODE_NONE, 0, ())
    if max(gpus) >= n_devices:
        raise SpecsweepError(f"GPU {max(gpus)} is beyond the {n_devices} devices llama.cpp supports")
    if len(gpus) == 1:
        return Placement(-1, ll.LLAMA_SPLIT_MODE_NONE, gpus[0], ())
    if split_mode not in SPLIT_MODES:
        raise SpecsweepError(f"unknown split mode {split_mode!r} (one of {', '.join(SPLIT_MODES)})")
    ratios = ratios or (1.0,) * len(gpus)
    if len(ratios) != len(gpus) or min(ratios) < 0 or sum(ratios) <= 0:
        raise SpecsweepError(f"tensor_split {list(ratios)} needs one non-negative share per GPU of {list(gpus)}")
    shares = [0.0] * n_devices
    for g, r in zip(gpus, ratios):
        shares[g] = float(r)
    return Placement(-1, SPLIT_MODES[split_mode], gpus[0], tuple(shares))


class Model:
    def __init__(self, path: Path, gpus: tuple[int, ...] | list[int] = (0,), vocab_only: bool = False,
                 split_mode: str = "layer", tensor_split: tuple[float, ...] | list[float] = (),
                 load_mtp: bool = False, override_kv: tuple[str, ...] | list[str] = (),
                 tensor_overrides: tuple | list = (), n_gpu_layers: int | None = None):
        """Load a GGUF. `gpus`: () keeps it on the CPU, (i,) puts all layers on GPU i, more
        indices split the model over those GPUs (`split_mode` layer, row or tensor, in the
        proportions `tensor_split`, even by default). `vocab_only` reads the tokenizer and chat
        template, no weights. `load_mtp` also loads the multi-token-prediction layers (llama.cpp
        skips them otherwise). `override_kv`: "KEY=TYPE:VALUE" strings, llama.cpp's --override-kv
        (specsweep.models.overrides); one llama.cpp would ignore for its type is refused.
        `tensor_overrides`: llama.cpp's -ot (specsweep.models.placement.Override, in order);
        `n_gpu_layers`: its -ngl on the GPU(s) (None: every layer). What llama.cpp reports it put
        where (buffer sizes, overridden tensors) is read back from its load log into `loaded`."""
        init(_state["verbose"])
        path = Path(path)
        if not path.is_file():
            raise SpecsweepError(f"model file not found: {path}")
        params = ll.llama_model_default_params()
        layout = gpu_placement(tuple(gpus), split_mode, tuple(tensor_split), ll.llama_max_devices())
        params.n_gpu_layers = layout.n_gpu_layers if n_gpu_layers is None or not gpus else n_gpu_layers
        params.split_mode = layout.split_mode
        params.main_gpu = layout.main_gpu
        if layout.tensor_split:
            self._split = (ctypes.c_float * len(layout.tensor_split))(*layout.tensor_split)  # alive while loading
            params.tensor_split = self._split
        self.tensor_overrides = tuple(tensor_overrides)
        if self.tensor_overrides:  # a NULL-terminated array, alive while loading
            self._bufts = buffer_types.override_array(self.tensor_overrides, f"model {path.name}")
            params.tensor_buft_overrides = ctypes.cast(self._bufts, ctypes.c_void_p)
        params.vocab_only = vocab_only
        params.load_mtp = load_mtp
        overrides = kv.parse_overrides(list(override_kv), f"model {path.name}")
        self.override_kv = tuple(o.text for o in overrides)
        if overrides:
            self._kv = kv.to_llama(overrides)  # alive while loading
            params.kv_overrides = self._kv
        _recent.clear()
        _state["capture"] = log = []
        try:
            self.ptr = ll.llama_model_load_from_file(str(path).encode(), params)
        finally:
            _state["capture"] = None
        if self.ptr:
            _loaded_then_check(self)
        self.loaded = placement.read_load_log(log)
        if not self.ptr:
            raise SpecsweepError(f"llama.cpp could not load {path}: {last_error('unknown error')}")
        ignored = next((line for _, line in _recent if "Bad metadata override type" in line), None)
        if ignored:  # llama.cpp loaded the file's value instead
            self.close()
            raise SpecsweepError(f"model {path.name}: override_kv ignored by llama.cpp: {ignored.split('Warning: ', 1)[-1]}")
        self.path = path
        self.vocab = ll.llama_model_get_vocab(self.ptr)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_embd = ll.llama_model_n_embd(self.ptr)
        self.n_layer = ll.llama_model_n_layer(self.ptr)
        self._is_eog: dict[int, bool] = {}

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as llama.cpp renders it (None when absent)."""
        buf = ctypes.create_string_buffer(256)
        n = ll.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def tokenize(self, text: str, parse_special: bool = True, add_special: bool = False) -> list[int]:
        """Token ids of `text`; `add_special` adds the BOS/EOS the vocabulary asks for
        (tokenizer.ggml.add_bos_token), as llama.cpp's tools do with a prompt."""
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise SpecsweepError(f"could not tokenize a prompt of {len(data)} bytes")
        return list(buf[:n])

    @property
    def has_recurrent_state(self) -> bool:
        """Hybrid or recurrent: a rejected draft cannot simply be cut off the memory."""
        return bool(ll.llama_model_is_recurrent(self.ptr) or ll.llama_model_is_hybrid(self.ptr))

    def chat_prompt(self, text: str, thinking: bool | None = None) -> str | None:
        """`text` as one user turn in the model's chat template, ready for the assistant's reply;
        None when the GGUF has no template llama.cpp recognises. `thinking` None: llama.cpp's own
        renderer (llama_chat_apply_template, which knows templates by their markers); True/False:
        the GGUF's template itself rendered with jinja2 and `enable_thinking` (as llama-server
        --jinja with chat_template_kwargs does), refused when the template has no such switch."""
        tmpl = ll.llama_model_chat_template(self.ptr, None)
        if not tmpl:
            return None
        if thinking is not None:
            return self._jinja_prompt(tmpl.decode("utf-8", errors="replace"), text, thinking)
        msg = (ll.llama_chat_message * 1)(ll.llama_chat_message(b"user", text.encode("utf-8")))
        cap = 2 * len(text.encode("utf-8")) + 256
        for _ in range(2):
            buf = ctypes.create_string_buffer(cap)
            n = ll.llama_chat_apply_template(tmpl, msg, 1, True, buf, cap)
            if n < 0:
                return None
            if n <= cap:
                return buf.raw[:n].decode("utf-8", errors="replace")
            cap = n + 1
        return None

    def _jinja_prompt(self, template: str, text: str, thinking: bool) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        special = lambda t: self.piece(t) if t >= 0 else ""  # noqa: E731
        render = Jinja2ChatFormatter(template, special(ll.llama_vocab_eos(self.vocab)),
                                     special(ll.llama_vocab_bos(self.vocab)))
        messages = [{"role": "user", "content": text}]
        try:
            on, off = (render(messages=messages, enable_thinking=v).prompt for v in (True, False))
        except Exception as e:  # a template jinja2 cannot render: its own error, one line
            raise SpecsweepError(f"the chat template of {self.path.name} does not render with jinja2: {e}") from None
        if on == off:
            raise SpecsweepError(f"thinking = {str(thinking).lower()}: the chat template of {self.path.name} has no "
                                 f"thinking switch (enable_thinking changes nothing); leave thinking unset")
        return on if thinking else off

    def is_eog(self, token: int) -> bool:
        """Asked for every generated token: each token's answer is kept (a dict lookup instead of a
        library call per token)."""
        known = self._is_eog.get(token)
        if known is None:
            known = self._is_eog[token] = bool(ll.llama_vocab_is_eog(self.vocab, token))
        return known

    @property
    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token (what llama.cpp's --ignore-eos bans), found once."""
        if getattr(self, "_eog", None) is None:
            self._eog = [t for t in range(self.n_vocab) if ll.llama_vocab_is_eog(self.vocab, t)]
        return self._eog

    @property
    def control_tokens(self) -> list[int]:
        """Every control token (chat markers and the like), found once."""
        if getattr(self, "_control", None) is None:
            self._control = [t for t in range(self.n_vocab) if ll.llama_vocab_is_control(self.vocab, t)]
        return self._control

    def piece_bytes(self, token: int) -> bytes:
        """The token's text as llama.cpp prints it (special tokens rendered)."""
        buf = ctypes.create_string_buffer(256)
        n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)]

    def piece(self, token: int) -> str:
        return self.piece_bytes(token).decode("utf-8", errors="replace")

    def close(self) -> None:
        if getattr(self, "ptr", None):
            ll.llama_model_free(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ExtBatch:
    """llama.cpp's extended batch (`llama_batch_ext`): entries that carry a token, an embedding
    row, or both (MTP pairs a token with the target's hidden state; DFlash injects the target's
    layer features as embedding-only entries). llama.cpp copies an entry's row into the batch as
    it is added (llama_batch_ext::set_token_embd), so a row need only live until `add` returns."""

    def __init__(self, ctx: "Context"):
        self.ptr = ll.llama_batch_ext_init(ctx.ptr)
        self._pos = (ll.llama_pos * 4)()
        self._pos_addr = ctypes.addressof(self._pos)
        self._embd = hot.Embd(None, 1, 0)

    def clear(self) -> None:
        ll.llama_batch_ext_clear(self.ptr)

    def add(self, pos: int, token: int | None = None, embd: np.ndarray | None = None,
            output: bool = False, seq: int = 0) -> int:
        """Append one entry at position `pos`; returns its batch index. Positions are given as
        llama.cpp's M-RoPE layout [p, p, p, 0], of which a text model reads the first."""
        if embd is None:
            return self.add_row(pos, token, None, 0, output, seq)
        embd = np.ascontiguousarray(embd, dtype=np.float32)  # alive until the call returns
        return self.add_row(pos, token, embd.ctypes.data, embd.shape[-1], output, seq)

    def add_row(self, pos: int, token: int | None, addr: int | None, width: int = 0, output: bool = False,
                seq: int = 0) -> int:
        """`add` with the embedding row given by its address and width (float32s): what the
        loops call per entry, with rows of llama.cpp's own output buffers or of kept arrays."""
        ptr = self.ptr
        if addr is not None:
            e = self._embd
            e.data, e.n_embd = addr, width
        if token is None:
            idx = hot.batch_ext_add_embd(ptr, seq, self._embd)
        else:
            idx = hot.batch_ext_add_token(ptr, seq, token)
            if idx >= 0 and addr is not None and not hot.batch_ext_set_embd_token(ptr, idx, self._embd):
                raise SpecsweepError("llama.cpp refused an embedding for a batch entry")
        if idx < 0:
            raise SpecsweepError(f"llama.cpp could not add a batch entry (error {idx})")
        p = self._pos
        p[0] = p[1] = p[2] = pos
        hot.batch_ext_set_pos(ptr, idx, self._pos_addr)
        if output:
            hot.batch_ext_set_output_logits(ptr, idx, True)
        return idx

    def close(self) -> None:
        if getattr(self, "ptr", None):
            ll.llama_batch_ext_free(self.ptr)
            self.ptr = None


class Context:
    def __init__(self, model: Model, opts: ContextOptions = ContextOptions(), other: "Context | None" = None,
                 eval_callback=None):
        """`other`: the target's context, for a draft context that reads it (an MTP head runs on
        the target's model; a DFlash drafter borrows the target's embeddings and output head).
        `eval_callback`: llama.cpp's cb_eval (a ggml_backend_sched_eval_callback, kept alive by the
        caller), which makes every decode run node range by node range: never for a timed context
        (engine/expert_trace.py)."""
        params = ll.llama_context_default_params()
        if eval_callback is not None:
            params.cb_eval = eval_callback
        params.n_ctx = opts.n_ctx
        params.n_batch = params.n_ubatch = opts.n_batch
        params.n_seq_max = opts.n_seq_max
        params.n_rs_seq = opts.n_rs_seq
        # a verify batch needs an output row per token (llama.cpp caps outputs per sequence)
        params.n_outputs_max = params.n_outputs_max_per_seq = min(opts.n_outputs or opts.n_batch, opts.n_batch)
        params.type_k = params.type_v = KV_TYPES[opts.type_kv]
        params.flash_attn_type = 1 if opts.flash_attn else 0
        params.no_perf = True
        params.ctx_type = CONTEXT_TYPES[opts.ctx_type]
        if other is not None:
            params.ctx_other = other.ptr
        params.n_threads = params.n_threads_batch = opts.n_threads or default_threads()
        self._sampler = None
        self._banned = np.array(model.eog_tokens, dtype=np.int64) if opts.ignore_eos else None
        self._samplers = []
        if opts.backend_sampling:  # one greedy chain per sequence (llama.cpp samples each sequence's outputs apart)
            if self._banned is not None and len(self._banned):
                self._bias = (ll.llama_logit_bias * len(self._banned))(
                    *(ll.llama_logit_bias(int(t), float("-inf")) for t in self._banned))
            for _ in range(opts.n_seq_max):
                chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
                if self._banned is not None and len(self._banned):
                    ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_logit_bias(
                        model.n_vocab, len(self._banned), self._bias))
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
                self._samplers.append(chain)
            self._sampler = self._samplers[0]
            self._sampler_cfg = (ll.llama_sampler_seq_config * len(self._samplers))(
                *(ll.llama_sampler_seq_config(seq, ctypes.cast(c, ctypes.c_void_p)) for seq, c in enumerate(self._samplers)))
            params.samplers = self._sampler_cfg
            params.n_samplers = len(self._samplers)
        _recent.clear()
        self.ptr = ll.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise SpecsweepError(f"llama.cpp could not create a context of {opts.n_ctx} tokens for "
                                 f"{model.path.name}: {last_error('out of memory?')}")
        self.model = model
        self.opts = opts
        self.n_vocab = model.n_vocab
        self.n_embd_out = ll.llama_model_n_embd_out(model.ptr)
        self._mem = ll.llama_get_memory(self.ptr)  # the context's memory: fixed for its lifetime
        self._views = hot.Views()  # numpy views of the output buffers, by address
        self._batch = ll.llama_batch_init(opts.n_batch, 0, 1)
        for i in range(opts.n_batch):  # one sequence per token, always
            self._batch.n_seq_id[i] = 1
        self._seq = None  # the sequence every slot of the batch is set up for (None: mixed)
        self._seq_rows = [self._batch.seq_id[i] for i in range(opts.n_batch)]  # each slot's seq_id array
        self._slot_seq = [None] * opts.n_batch  # what each slot's seq_id holds now (None: unset)
        self._states: dict[int, ctypes.Array] = {}  # checkpoint buffer per sequence, reused
        self._ext: ExtBatch | None = None
        self._staging: np.ndarray | None = None  # embedding rows for decode_staged, reused
        self._staging_ptr = None
        # an expert_trace.Journal while a traced cell's trial runs: what a replay must do again
        self.journal = None
        _loaded_then_check(self)

    def decode(self, tokens: list[int], pos0: int, all_logits: bool = False, seq: int = 0) -> None:
        """Decode tokens at positions pos0.. in one batch; logits for the last one (or all).
        A prompt longer than n_batch is decoded in n_batch chunks (only its last logits kept)."""
        if not tokens:
            raise ValueError("an empty batch")
        if self.journal is not None:
            self.journal.ops.append(("decode", tuple(tokens), pos0, all_logits))
        if len(tokens) > self.opts.n_batch and not all_logits:
            step = self.opts.n_batch
            for i in range(0, len(tokens), step):
                self._decode(tokens[i : i + step], pos0 + i, False, seq)
            return
        self._decode(tokens, pos0, all_logits, seq)

    def _decode(self, tokens: list[int], pos0: int, all_logits: bool, seq: int) -> None:
        if len(tokens) > self.opts.n_batch:
            raise ValueError(f"batch of {len(tokens)} exceeds n_batch {self.opts.n_batch}")
        b = self._batch
        if self._seq != seq:  # host work per token is the overhead budget: set constants once
            rows, slot_seq = self._seq_rows, self._slot_seq
            for i in range(self.opts.n_batch):
                if slot_seq[i] != seq:
                    rows[i][0] = slot_seq[i] = seq
            self._seq = seq
        n = len(tokens)
        b.n_tokens = n
        token, pos, logits = b.token, b.pos, b.logits
        for i, t in enumerate(tokens):
            token[i] = t
            pos[i] = pos0 + i
            logits[i] = all_logits
        logits[n - 1] = True
        rc = ll.llama_decode(self.ptr, b)
        interrupts.check()
        if rc != 0:
            raise SpecsweepError(f"llama_decode failed ({rc}): {last_error('see --verbose')}")

    def decode_streams(self, entries: list[tuple[int, list[int], int]], logits: bool = True) -> list[int]:
        """Decode several sequences' tokens in one batch, (seq, tokens, pos0) each, with an output
        for every token (logits=False: none); returns the batch index where each entry starts."""
        n = sum(len(tokens) for _, tokens, _ in entries)
        if n > self.opts.n_batch:
            raise ValueError(f"batch of {n} exceeds n_batch {self.opts.n_batch}")
        b = self._batch
        token, pos, out, rows, slot_seq = b.token, b.pos, b.logits, self._seq_rows, self._slot_seq
        starts, i = [], 0
        for seq, tokens, pos0 in entries:
            starts.append(i)
            for k, t in enumerate(tokens):
                token[i] = t
                pos[i] = pos0 + k
                out[i] = logits
                if slot_seq[i] != seq:
                    rows[i][0] = slot_seq[i] = seq
                i += 1
        if any(seq != self._seq for seq, _, _ in entries):
            self._seq = None  # slots now hold other sequences: decode() sets them all up again
        # (one stream's entries leave decode()'s setup valid: a lone draft model drafting through
        # draft_many does not pay the n_batch-slot rewrite on every step)
        b.n_tokens = n
        rc = ll.llama_decode(self.ptr, b)
        interrupts.check()
        if rc != 0:
            raise SpecsweepError(f"llama_decode failed ({rc}): {last_error('see --verbose')}")
        return starts

    def staging(self, n: int, width: int) -> np.ndarray:
        """n rows of `width` floats for the next `decode_staged` to pair with its tokens (a
        reused buffer: valid until that call)."""
        buf = self._staging
        if buf is None or len(buf) < n or buf.shape[1] != width:
            buf = self._staging = np.zeros((max(n, 8), width), dtype=np.float32)
            self._staging_ptr = ctypes.cast(buf.ctypes.data, ctypes.POINTER(ctypes.c_float))
        return buf[:n]

    def decode_staged(self, entries: list[tuple[int, list[int], int]], logits: bool = True) -> list[int]:
        """`decode_streams` with every token paired with its row of `staging()`, in order. llama.cpp
        builds from a batch carrying tokens and rows the extended batch that llama_process takes
        (llama_batch_compat: token, position, sequence, output flag and row per entry, "for
        example the MTP hook batches"), so this is llama_process's decode with a few array writes
        per entry instead of four library calls. Rows must be the width llama.cpp's extended batch
        reads for this context (n_embd_inp: an MTP head's)."""
        b = self._batch
        b.embd = self._staging_ptr
        try:
            return self.decode_streams(entries, logits)
        finally:
            b.embd = None  # the next plain decode carries tokens only (and llama_batch_free frees embd)

    def ext_batch(self) -> ExtBatch:
        """The context's extended batch, cleared (one per context, reused)."""
        if self._ext is None:
            self._ext = ExtBatch(self)
        self._ext.clear()
        return self._ext

    def process(self, batch: ExtBatch, encode: bool = False) -> None:
        """Decode (or, for a drafter's encoder, encode) an extended batch (llama_process)."""
        kind = ll.LLAMA_PROCESS_TYPE_ENCODE if encode else ll.LLAMA_PROCESS_TYPE_DECODE
        rc = ll.llama_process(self.ptr, kind, batch.ptr)
        if rc != 0:
            raise SpecsweepError(f"llama_process failed ({rc}): {last_error('see --verbose')}")

    # --- hidden states that DFlash and MTP drafters read from the target (engine/ext.py) ---
    def extract_layer_inputs(self, layers: list[int]) -> None:
        """Keep the input of these layers for every token of each batch (DFlash's features)."""
        for lid in layers:
            ext.call("set_embeddings_layer_inp", self.ptr, lid, True)

    def layer_input(self, lid: int, n_rows: int) -> np.ndarray:
        """The input of layer `lid` for the first n_rows tokens of the last batch, (n_rows, n_embd)."""
        ptr = ext.call("get_embeddings_layer_inp", self.ptr, lid)
        if not ptr:
            raise SpecsweepError(f"llama.cpp kept no input for layer {lid}")
        return self._views.get(ctypes.cast(ptr, ctypes.c_void_p).value, (n_rows, self.model.n_embd))

    def output_hidden(self, masked: bool) -> None:
        """Keep the final hidden state ("h_nextn") for every token of a batch (masked False) or
        for the tokens with output set (masked True)."""
        ext.call("set_embeddings_nextn", self.ptr, True, masked)

    def hidden(self, i: int, width: int | None = None) -> np.ndarray:
        """The kept final hidden state of batch index (or output) i, a view; `width` defaults to
        the model's output width (a drafter's decoder rows are its n_embd wide)."""
        return self._views.get(self.hidden_addr(i), (width or self.n_embd_out,))

    def hidden_addr(self, i: int) -> int:
        """The address of `hidden(i)`'s row: valid until the context's next decode."""
        addr = ext.function("get_embeddings_nextn_ith_addr")(self.ptr, i)
        if not addr:
            raise SpecsweepError("llama.cpp kept no hidden state (h_nextn) for this batch")
        return addr

    def hidden_rows(self, n: int, width: int | None = None) -> np.ndarray:
        """The kept final hidden states of the first n tokens of the last batch (unmasked), a view."""
        return self._views.get(self.hidden_base(), (n, width or self.n_embd_out))

    def hidden_base(self) -> int:
        """The address of `hidden_rows`' first row: valid until the context's next decode."""
        addr = ext.function("get_embeddings_nextn_addr")(self.ptr)
        if not addr:
            raise SpecsweepError("llama.cpp kept no hidden states (h_nextn) for this batch")
        return addr

    def set_causal(self, causal: bool) -> None:
        ll.llama_set_causal_attn(self.ptr, causal)

    def sync(self) -> None:
        """Wait for the device: llama_decode returns before a GPU has finished."""
        ll.llama_synchronize(self.ptr)

    def logits(self, i: int = -1) -> np.ndarray:
        """Output i's logits, a view (valid until the next decode)."""
        addr = hot.get_logits_ith(self.ptr, i)
        if not addr:
            raise SpecsweepError(f"llama.cpp has no logits for output {i}: {last_error('see --verbose')}")
        return self._views.get(addr, (self.n_vocab,))

    def argmax(self, i: int = -1) -> int:
        """The greedy token after output i: picked on the device with backend sampling. With
        ignore_eos, never an end-of-generation token."""
        best = self._argmax(i)
        if self.journal is not None:
            self.journal.ops.append(("out", i, best))
        return best

    def _argmax(self, i: int) -> int:
        if self._sampler is not None:
            token = ll.llama_get_sampled_token_ith(self.ptr, i)
            if token >= 0:
                return int(token)
        row = self.logits(i)
        best = int(row.argmax())
        if self._banned is not None and best in self._banned:  # rare: copy only then
            row = row.copy()
            row[self._banned] = -np.inf
            best = int(row.argmax())
        return best

    # --- memory: what rollback after a rejected draft is made of ---
    def seq_rm(self, p0: int, p1: int = -1, seq: int = 0) -> bool:
        """Drop positions [p0, p1) of a sequence; False where the memory cannot (recurrent state)."""
        if self.journal is not None:
            self.journal.ops.append(("seq_rm", p0, p1))
        return hot.memory_seq_rm(self._mem, seq, p0, p1)

    def pos_max(self, seq: int = 0) -> int:
        return hot.memory_seq_pos_max(self._mem, seq)

    def clear(self) -> None:
        if self.journal is not None:
            self.journal.ops.append(("clear",))
        ll.llama_memory_clear(self._mem, True)

    def save_partial_state(self, seq: int = 0):
        """The recurrent (non-KV) state of a sequence: llama.cpp's checkpoint for hybrid models.
        One device-to-host copy into a buffer the context reuses (tens of MB at full shape, every
        verify step): the returned checkpoint is valid until the next save."""
        if self.journal is not None:
            self.journal.ops.append(("save",))
        flags = ll.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        size = ll.llama_state_seq_get_size_ext(self.ptr, seq, flags)
        state = self._states.get(seq)
        if state is None or len(state) < size:
            state = self._states[seq] = (ctypes.c_uint8 * size)()
        ll.llama_state_seq_get_data_ext(self.ptr, state, size, seq, flags)
        return (state, size)

    def load_partial_state(self, checkpoint, seq: int = 0) -> None:
        if self.journal is not None:
            self.journal.ops.append(("load",))
        buf, size = checkpoint
        if ll.llama_state_seq_set_data_ext(self.ptr, buf, size, seq, ll.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY) == 0:
            raise SpecsweepError(f"could not restore a checkpoint: {last_error('see --verbose')}")

    def can_remove_partially(self) -> bool:
        """Can a plain seq_rm drop the tail of a sequence? (False for hybrid/recurrent memory
        without snapshots: llama.cpp then rolls back through checkpoints.) Clears the memory."""
        if self.opts.n_rs_seq > 0 and ll.llama_n_rs_seq(self.ptr) > 0:
            return True
        self.clear()
        self.decode([0, 0], 0)
        ok = self.seq_rm(1, -1)
        self.clear()
        return ok

    def close(self) -> None:
        if getattr(self, "ptr", None):
            if self._ext is not None:
                self._ext.close()
            ll.llama_batch_free(self._batch)
            ll.llama_free(self.ptr)
            self.ptr = None
            for chain in self._samplers:
                ll.llama_sampler_free(chain)
            self._samplers, self._sampler = [], None

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
