"""The matrix-wide keys a cell may set (every method reads them), and the Key type.

Each method's own keys, and its defaults for shared ones, live with the method in
`specsweep/methods.py`; `methods.keys_of(name)` gives everything a cell of that method reads, so
that parsing, validation, `--dry-run` and the records all agree on the names. The names follow
llama.cpp's flags where one exists (`draft_max` is `--spec-draft-n-max`, `n_match` is
`--spec-ngram-mod-n-match`, `lookup_static` is `--lookup-cache-static`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

KV_TYPES = ("q8_0", "f16")
ROLLBACKS = ("checkpoint", "snapshot")
SPLIT_MODES = ("layer", "row", "tensor")
BACKENDS = ("inprocess", "server")
LOOPS = ("simple", "server")


@dataclass(frozen=True)
class Key:
    default: object
    types: tuple  # allowed python types of one value
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


COMMON = {
    "method": Key(None, (str,), help="what drafts the tokens (specsweep/methods.py)"),
    "target": Key(None, (str,), help="model name: a [models] entry or a models.lock name"),
    "kv": Key("q8_0", (str,), choices=KV_TYPES, help="KV cache type (K and V)"),
    "flash_attn": Key(True, (bool,), help="flash attention"),
    "n_ctx": Key(4096, (int,), minimum=64, help="context size of every context"),
    "n_batch": Key(512, (int,), minimum=1, help="logical batch; a verify batch must fit"),
    "n_predict": Key(300, (int,), minimum=1, help="tokens to generate per trial"),
    "trials": Key(5, (int,), minimum=1, help="measured trials per prompt"),
    "warmup": Key(1, (int,), minimum=0, help="unmeasured runs before a cell's trials"),
    "prompts": Key("default", (str,), help="prompt set: a shipped name, a TOML file next to the matrix, "
                   "spec-bench:PATH or hf://datasets/OWNER/NAME/FILE, with ?per_kind=N"),
    "prompt_kinds": Key([], (list,), help="only these kinds of the set (empty: all)"),
    "chat": Key(True, (bool,), help="wrap each prompt in the target's chat template"),
    # unset: llama.cpp's own renderer (llama_chat_apply_template); true/false: the GGUF's template
    # rendered with jinja2 and enable_thinking, as llama-server --jinja renders it (Qwen3.6 thinks by
    # default, and thinking changes what n-gram methods can draft and how long answers run)
    "thinking": Key(None, (bool,), help="render the chat template with enable_thinking true/false (jinja2)"),
    # llama.cpp's --ignore-eos: end-of-generation tokens banned in the target's sampling, so every
    # arm generates n_predict tokens and arms that would stop at different places stay comparable
    "ignore_eos": Key(True, (bool,), help="never end at an end-of-generation token (--ignore-eos)"),
    "gpus": Key([0], (list,), help="[] CPU only, [0] one GPU, [0, 1] the target split over two"),
    "split_mode": Key("layer", (str,), choices=SPLIT_MODES,
                      help="how a target on several GPUs is split (llama.cpp's --split-mode)"),
    "tensor_split": Key([], (list,), help="the target's share per GPU of `gpus`, e.g. [3, 1] (empty: even)"),
    # where the target's weights live (specsweep/models/placement.py), as llama.cpp's flags say;
    # unset: every layer on the GPU(s) of `gpus`
    "n_cpu_moe": Key(None, (int,), minimum=0, help="keep the experts of the first N layers in host memory (--n-cpu-moe)"),
    "override_tensor": Key(None, (list,), help='["REGEX=BUFTYPE", ...]: matching tensors to CPU or a device such as CUDA0 (-ot)'),
    "n_gpu_layers": Key(None, (int,), minimum=0, help="layers on the GPU, the output layer counting as one (-ngl; unset: all)"),
    "vram_budget": Key(None, (str,), help='"24GiB": the -ngl/-ot llama.cpp\'s -fit picks with that much free on the GPU '
                       "(1 GiB margin; llama-fit-params, or an approximation without a GPU); excludes the three above"),
    "threads": Key(0, (int,), minimum=0, help="CPU threads (0: every CPU this process may use)"),
    # on by default: host-side greedy copies a row of logits per token (1 MB at a 248k vocabulary);
    # an H100 baseline measured 0.968 of llama-bench that way against 0.987 with it
    "backend_sampling": Key(True, (bool,), help="pick greedy tokens on the device (llama.cpp's backend "
                            "sampling): token ids come back instead of a row of logits per token"),
    # what runs the trials (specsweep/backends/): specsweep's engine in process, or llama.cpp's own
    # llama-server started per cell with the matching flags (what a server user sees)
    "backend": Key("inprocess", (str,), choices=BACKENDS,
                   help="inprocess: specsweep's engine; server: llama-server started per cell (--llama-server PATH)"),
    "parallel": Key(1, (int,), minimum=1, maximum=64,
                    help="concurrent streams, each on its own prompt (server: -np N; in process: N sequences of one context)"),
    # in process, which llama.cpp loop a single stream runs: llama-speculative-simple's, or a
    # llama-server slot's (synthetic acceptance and parallel streams always run the server's)
    "loop": Key("simple", (str,), choices=LOOPS,
                help="in process: simple (llama-speculative-simple's loop) or server (a llama-server slot's)"),
    # the router's choices of a MoE target, per pass and layer (engine/expert_trace.py): each trial
    # is replayed after it ran in a second context that reads them; the timed context is untouched
    "trace_experts": Key(False, (bool,), help="record the experts a MoE target's router chose in every verify "
                         "(replayed in a context of its own after each trial, never timed)"),
    "rollback": Key("checkpoint", (str,), choices=ROLLBACKS,
                    help="how a hybrid target drops rejected tokens (drafters that read the target's hidden states: snapshot, as llama.cpp)"),
}

MODEL_KEYS = ("target", "draft", "drafter")
