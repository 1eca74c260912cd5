"""Every key a matrix cell may set: its default, its type and which methods read it.

One table, so that parsing, validation, `--dry-run` and the records all agree on the names. The
names follow llama.cpp's flags where one exists (`draft_max` is `--spec-draft-n-max`, `n_match` is
`--spec-ngram-mod-n-match`, `lookup_static` is `--lookup-cache-static`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("baseline", "draft", "ngram-cache", "ngram-mod", "dflash", "mtp")
SPECULATIVE = METHODS[1:]
KV_TYPES = ("q8_0", "f16")
ROLLBACKS = ("checkpoint", "snapshot")
SPLIT_MODES = ("layer", "row", "tensor")


@dataclass(frozen=True)
class Key:
    default: object
    types: tuple  # allowed python types of one value
    methods: tuple = METHODS  # methods that read it
    choices: tuple = ()
    minimum: float | None = None
    help: str = ""


COMMON = {
    "method": Key(None, (str,), choices=METHODS, help="what drafts the tokens"),
    "target": Key(None, (str,), help="model name: a [models] entry or a models.lock name"),
    "kv": Key("q8_0", (str,), choices=KV_TYPES, help="KV cache type (K and V)"),
    "flash_attn": Key(True, (bool,), help="flash attention"),
    "n_ctx": Key(4096, (int,), minimum=64, help="context size of every context"),
    "n_batch": Key(512, (int,), minimum=1, help="logical batch; a verify batch must fit"),
    "n_predict": Key(300, (int,), minimum=1, help="tokens to generate per trial"),
    "trials": Key(5, (int,), minimum=1, help="measured trials per prompt"),
    "warmup": Key(1, (int,), minimum=0, help="unmeasured runs before a cell's trials"),
    "prompts": Key("default", (str,), help="prompt set: a shipped name or a file next to the matrix"),
    "prompt_kinds": Key([], (list,), help="only these kinds of the set (empty: all)"),
    "chat": Key(True, (bool,), help="wrap each prompt in the target's chat template"),
    "gpus": Key([0], (list,), help="[] CPU only, [0] one GPU, [0, 1] the target split over two"),
    "split_mode": Key("layer", (str,), choices=SPLIT_MODES,
                      help="how a target on several GPUs is split (llama.cpp's --split-mode)"),
    "tensor_split": Key([], (list,), help="the target's share per GPU of `gpus`, e.g. [3, 1] (empty: even)"),
    "threads": Key(0, (int,), minimum=0, help="CPU threads (0: every CPU this process may use)"),
    # on by default: host-side greedy copies a row of logits per token (1 MB at a 248k vocabulary);
    # an H100 baseline measured 0.968 of llama-bench that way against 0.987 with it
    "backend_sampling": Key(True, (bool,), help="pick greedy tokens on the device (llama.cpp's backend "
                            "sampling): token ids come back instead of a row of logits per token"),
    "rollback": Key("checkpoint", (str,), choices=ROLLBACKS,
                    help="how a hybrid target drops rejected tokens (dflash and mtp: snapshot, as llama.cpp)"),
}

METHOD_KEYS = {
    "draft": Key(None, (str,), ("draft",), help="draft model name"),
    "drafter": Key(None, (str,), ("dflash",), help="DFlash drafter model name"),
    "draft_gpu": Key(None, (int,), ("draft", "dflash"), minimum=0,
                     help="GPU for the draft model (default: the target's)"),
    # --spec-draft-n-max/-n-min/-p-min; ngram-mod has its own n-min/n-max (defaults 48/64)
    "draft_max": Key(None, (int,), SPECULATIVE, minimum=1, help="most tokens per draft"),
    "draft_min": Key(None, (int,), SPECULATIVE, minimum=0, help="shorter drafts are dropped"),
    "p_min": Key(0.0, (float, int), ("draft", "dflash", "mtp"), minimum=0.0,
                 help="stop drafting below this probability"),
    "n_match": Key(24, (int,), ("ngram-mod",), minimum=1, help="n-gram length looked up"),
    "lookup_static": Key("", (str,), ("ngram-cache",), help="static n-gram cache file"),
    "lookup_dynamic": Key("", (str,), ("ngram-cache",), help="dynamic n-gram cache file"),
    # What `llama-lookup --lookup-cache-dynamic` leaves after N earlier runs of the same prompt: each
    # run's text (prompt + the baseline's greedy output) merged into the dynamic cache. With N >= 2
    # the strict thresholds pass for 3- and 4-grams, so ngram-cache drafts the continuation it saw:
    # a drafter that costs nothing and is right wherever the target repeats itself: close to the best
    # any drafter of that length can do on a target (on random-weight models, the only cheap one
    # that is accepted).
    "lookup_prior_runs": Key(0, (int,), ("ngram-cache",), minimum=0,
                             help="earlier runs of the same prompt folded into the dynamic cache"),
}

# llama.cpp's defaults where a method's own default differs from the shared one
METHOD_DEFAULTS = {
    "draft": {"draft_max": 3, "draft_min": 0},
    # llama.cpp's draft defaults (3/0) hold for every model-based drafter; DFlash clamps draft_max
    # to its block size - 1. For drafters that read the target's hidden states llama.cpp gives a
    # hybrid target draft_max recurrent-state snapshots (common_params_speculative::need_n_rs_seq),
    # so their rollback default is "snapshot"
    "dflash": {"draft_max": 3, "draft_min": 0, "rollback": "snapshot"},
    "mtp": {"draft_max": 3, "draft_min": 0, "rollback": "snapshot"},
    "ngram-cache": {"draft_max": 8, "draft_min": 0},  # fixed at 8 in llama.cpp (create_state_ngram_cache)
    "ngram-mod": {"draft_max": 64, "draft_min": 48},
}

ALL_KEYS = {**COMMON, **METHOD_KEYS}
MODEL_KEYS = ("target", "draft", "drafter")
