"""Every speculative method, described once: its name, llama.cpp's `--spec-type`, its matrix keys
and their defaults (llama.cpp's), the llama.cpp flags a cell maps to, its label and colour on the
page, the models it needs, the second context it decodes in, its draft limit and its drafter.

The matrix (`matrix/load.py`), cells (`matrix/cells.py`), the runner, the header checks, the native
tools' command lines and the report all read this table, so a method is added here and nowhere
else. Heavy imports (llama.cpp, the drafters) happen inside the factories, so that reading a
matrix or drawing a page never loads libllama.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

from specsweep.matrix.keys import Key

# --- keys shared by several methods; each method below sets its own defaults (llama.cpp's) ---

def _draft_n(n_max: int, n_min: int, what: str = "") -> dict[str, Key]:
    """--spec-draft-n-max / -n-min (ngram-mod has its own pair with the same meaning)."""
    return {"draft_max": Key(n_max, (int,), minimum=1, help=f"most tokens per draft{what}"),
            "draft_min": Key(n_min, (int,), minimum=0, help="shorter drafts are dropped")}


P_MIN = {"p_min": Key(0.0, (float, int), minimum=0.0, help="stop drafting below this probability (top-10 softmax)")}
# the draft context's KV cache type: llama.cpp's default is f16 unless -ctkd/-ctvd say otherwise;
# specsweep's default (unset) gives the draft context the target's `kv`
DRAFT_KV = {"draft_kv": Key(None, (str,), choices=("q8_0", "f16"),
                            help="KV type of the draft context (-ctkd/-ctvd; unset: the target's kv)")}
DRAFTER = Key(None, (str,), help="the drafter model that reads the target's hidden states (DFlash, DSpark, EAGLE-3)")
DRAFT_GPU = {"draft_gpu": Key(None, (int,), minimum=0, help="GPU for the draft model (default: the target's)")}
# the draft model's or drafter's experts in host memory (llama.cpp's -ncmoed); the MTP head runs
# on the target's own weights, which the target's placement keys place
DRAFT_PLACEMENT = {"draft_n_cpu_moe": Key(None, (int,), minimum=0,
                                          help="keep the experts of the draft model's first N layers in host memory (-ncmoed)")}


def _ngram_map(n: int = 12, m: int = 48, hits: int | None = 1) -> dict[str, Key]:
    """common_params_speculative_ngram_map: size_n 12, size_m 48, min_hits 1."""
    keys = {"size_n": Key(n, (int,), minimum=1, maximum=1024, help="length of the n-gram looked up"),
            "size_m": Key(m, (int,), minimum=1, maximum=1024, help="length of the m-gram drafted")}
    if hits is not None:
        keys["min_hits"] = Key(hits, (int,), minimum=1, help="times the key must have been seen")
    return keys


# Synthetic acceptance (llama.cpp's --spec-synth-len / --spec-synth-rates): every speculative
# method pays its real drafting cost while its drafts are accepted at a chosen rate
SYNTH = {
    "synth_len": Key(None, (float, int), minimum=1.0,
                     help="mean accepted length per verify, the target's token included (--spec-synth-len)"),
    "synth_rates": Key(None, (list,), help="unconditional acceptance per draft position (--spec-synth-rates)"),
    "synth_seed": Key(None, (int,), minimum=0, maximum=0xFFFFFFFE,
                      help="root of the accept/reject draws' seeds: each trial's seed is derived from it (default 42)"),
}
SYNTH_SEED = 42  # the root of a synthetic cell's seeds unless `synth_seed` says otherwise
SEED_MAX = 0xFFFFFFFE  # llama-server reads a request's seed -1 (0xFFFFFFFF as uint32) as "random"


def trial_seed(settings: dict, draws_key: str, run: int, block: int, prompt_id: str) -> int:
    """The seed of one trial's synthetic draws, derived from the cell's `synth_seed` (default 42),
    the cell (`draws_key`: its identity without the backend, so a config draws alike in process and
    through llama-server), the run, the block (the trial index in the sequential design) and the
    prompt. One seed per trial, all its streams alike: llama-server seeds every slot of a request
    from the request's one `seed`, and a multi-stream trial is one request so that its streams
    start in the same step (a request per stream arrives with jitter, see backends/server.py)."""
    root = settings.get("synth_seed")
    key = json.dumps([SYNTH_SEED if root is None else int(root), draws_key, int(run), int(block), str(prompt_id)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") % (SEED_MAX + 1)


def base_seed(settings: dict) -> int:
    """The seed of draws outside the recorded trials (warm-ups): the root itself."""
    root = settings.get("synth_seed")
    return SYNTH_SEED if root is None else int(root)


@dataclass(frozen=True)
class Method:
    name: str  # the matrix's `method` and the records' `method`
    spec_type: str | None  # llama.cpp's --spec-type
    color: str  # on the page
    keys: dict[str, Key] = field(default_factory=dict)  # the method's own keys, llama.cpp's defaults
    roles: tuple[str, ...] = ()  # model roles a cell must name ("draft", "drafter")
    # the second context its drafter decodes in: "draft" (its own model, own context), "drafter"
    # (its own model, reading the target's context: DFlash, DSpark, EAGLE-3), "mtp" (the
    # target's own MTP head), None (no model)
    context: str | None = None
    rollback: str = "checkpoint"  # default rollback of a hybrid target (see matrix/keys.py)
    flags: Callable[[dict], list[str]] = lambda s: []  # llama.cpp's flags for the method's settings
    n_max: Callable[[dict], int] = lambda s: 0  # the draft limit the settings give (before model caps)
    make: Callable | None = None  # (settings, contexts: DrafterContexts) -> Drafter
    check: Callable | None = None  # header checks, see below
    title: Callable[[dict], str] = lambda s: ""  # the default cell name
    capped: bool = False  # the drafter's file may lower its draft limit (DFlash's block size)

    @property
    def speculative(self) -> bool:
        return self.name != "baseline"


# --- drafter factories (lazy imports: llama.cpp loads only when a run starts) ---

@dataclass
class DrafterContexts:
    """What a drafter is built from: the draft context (if the method has one), the target's
    context, the matrix's folder (for cache files), for ngram-cache's prior runs, texts, and the
    stream (sequence) the drafter serves when several share the contexts (`parallel`)."""
    draft: object | None
    target: object
    matrix_dir: object = None
    prior_texts: list = field(default_factory=list)
    seq: int = 0


def _n(s: dict) -> dict:
    return {"n_max": s["draft_max"], "n_min": s["draft_min"], "p_min": float(s.get("p_min", 0.0))}


def _make_draft(s, c):
    from specsweep.engine.drafters.draft_model import DraftModel
    return DraftModel(c.draft, **_n(s), seq=c.seq)


def _make_dflash(s, c):
    from specsweep.engine.drafters.dflash import DFlash
    return DFlash(c.draft, c.target, **_n(s), seq=c.seq)


def _make_dspark(s, c):
    from specsweep.engine.drafters.dflash import DSpark
    return DSpark(c.draft, c.target, **_n(s), seq=c.seq)


def _make_eagle3(s, c):
    from specsweep.engine.drafters.eagle3 import Eagle3
    return Eagle3(c.draft, c.target, **_n(s), seq=c.seq)


def _make_mtp(s, c):
    from specsweep.engine.drafters.mtp import Mtp
    return Mtp(c.draft, c.target, **_n(s), seq=c.seq)


def _make_ngram_cache(s, c):
    from specsweep.engine.drafters.ngram_cache import NgramCache
    files = {k: (c.matrix_dir / s[k]) if s.get(k) else None for k in ("lookup_static", "lookup_dynamic")}
    return NgramCache(n_max=s["draft_max"], n_min=s["draft_min"], static_path=files["lookup_static"],
                      dynamic_path=files["lookup_dynamic"], prior_texts=c.prior_texts)


def _make_ngram_mod(s, c):
    from specsweep.engine.drafters.ngram_mod import NgramMod
    return NgramMod(n_match=s["n_match"], n_max=s["draft_max"], n_min=s["draft_min"])


def _make_ngram_simple(s, c):
    from specsweep.engine.drafters.ngram_map import NgramSimple
    return NgramSimple(size_n=s["size_n"], size_m=s["size_m"])


def _make_ngram_map(key_only: bool):
    def make(s, c):
        from specsweep.engine.drafters.ngram_map import NgramMap
        return NgramMap(size_n=s["size_n"], size_m=s["size_m"], min_hits=s["min_hits"], key_only=key_only)
    return make


# --- header checks (GGUF headers only, before anything loads): (models, settings, path_of,
# overrides_of) -> the vocabulary outcome (models.vocab_match.PairCheck) or None; raise to refuse ---

def _check_draft(models, s, path_of, overrides_of):
    from specsweep.models.vocab_match import check_pair
    t, d = models["target"], models["draft"]
    return check_pair(t.name, path_of(t), d.name, path_of(d), target_overrides=overrides_of(t),
                      draft_overrides=overrides_of(d))


def _check_block_synth(s, drafter_name: str, limit: int) -> None:
    """Synthetic acceptance against the draft limit a block drafter really has (llama.cpp clamps
    draft_max to its block), before anything loads."""
    if s.get("synth_len") is None and not s.get("synth_rates"):
        return
    from specsweep.acceptance import resolve_rates
    from specsweep.errors import SpecsweepError
    try:
        resolve_rates(s.get("synth_len"), s.get("synth_rates"), min(s["draft_max"], limit))
    except SpecsweepError as e:
        raise SpecsweepError(f"{e.message} (drafter {drafter_name} drafts at most {limit} tokens per block)") from None


def _check_dflash(models, s, path_of, overrides_of):
    from specsweep.models.drafter_fit import check_dflash
    from specsweep.models.header import field, open_gguf
    t, d = models["target"], models["drafter"]
    out = check_dflash(t.name, path_of(t), d.name, path_of(d), overrides_of(t), overrides_of(d))
    _check_block_synth(s, d.name, int(field(open_gguf(path_of(d), d.name), "dflash.block_size", 16)) - 1)
    return out


def _check_dspark(models, s, path_of, overrides_of):
    from specsweep.models.drafter_fit import check_dspark, dspark_layout
    t, d = models["target"], models["drafter"]
    out = check_dspark(t.name, path_of(t), d.name, path_of(d), overrides_of(t), overrides_of(d),
                       p_min=float(s.get("p_min", 0.0)))
    _check_block_synth(s, d.name, dspark_layout(path_of(d), d.name).n_draft_max)
    return out


def _check_eagle3(models, s, path_of, overrides_of):
    from specsweep.models.drafter_fit import check_eagle3
    t, d = models["target"], models["drafter"]
    return check_eagle3(t.name, path_of(t), d.name, path_of(d), overrides_of(t), overrides_of(d))


def _check_mtp(models, s, path_of, overrides_of):
    from specsweep.models.drafter_fit import check_mtp
    check_mtp(models["target"].name, path_of(models["target"]), overrides_of(models["target"]))


# --- llama.cpp flags ---

def _draft_flags(s: dict) -> list[str]:
    kv = s.get("draft_kv") or s.get("kv")  # specsweep's draft context: the target's kv unless draft_kv
    return ["--spec-draft-n-max", str(s["draft_max"]), "--spec-draft-n-min", str(s["draft_min"]),
            "--spec-draft-p-min", f"{float(s.get('p_min', 0.0)):g}", *(["-ctkd", kv, "-ctvd", kv] if kv else [])]


def _map_flags(kind: str, hits: bool) -> Callable[[dict], list[str]]:
    def flags(s: dict) -> list[str]:
        out = [f"--spec-{kind}-size-n", str(s["size_n"]), f"--spec-{kind}-size-m", str(s["size_m"])]
        return out + ([f"--spec-{kind}-min-hits", str(s["min_hits"])] if hits else [])
    return flags


def _model_title(role: str):
    return lambda s: f"{s['method']} {s[role]} max={s['draft_max']} min={s['draft_min']}"


_REGISTRY = [
    Method("baseline", None, "#6b6b6b", title=lambda s: "baseline"),
    Method("draft", "draft-simple", "#0072B2", {"draft": Key(None, (str,), help="draft model name"),
                                                **DRAFT_GPU, **DRAFT_PLACEMENT, **DRAFT_KV, **_draft_n(3, 0), **P_MIN},
           roles=("draft",), context="draft", flags=_draft_flags, n_max=lambda s: s["draft_max"],
           make=_make_draft, check=_check_draft, title=_model_title("draft")),
    # llama.cpp fixes ngram-cache drafts at 8 tokens (create_state_ngram_cache) and reads neither
    # limit; other values here are a specsweep extension
    Method("ngram-cache", "ngram-cache", "#E69F00", {
        **_draft_n(8, 0),
        "lookup_static": Key("", (str,), help="static n-gram cache file"),
        "lookup_dynamic": Key("", (str,), help="dynamic n-gram cache file"),
        # What `llama-lookup --lookup-cache-dynamic` leaves after N earlier runs of the same prompt:
        # each run's text (prompt + the baseline's greedy output) merged into the dynamic cache.
        # With N >= 2 the strict thresholds pass for 3- and 4-grams, so ngram-cache drafts the
        # continuation it saw: a drafter that costs nothing and is right wherever the target
        # repeats itself (on random-weight models, the only cheap one that is accepted).
        "lookup_prior_runs": Key(0, (int,), minimum=0, help="earlier runs of the same prompt folded into the dynamic cache"),
    }, n_max=lambda s: s["draft_max"], make=_make_ngram_cache,
        title=lambda s: f"ngram-cache max={s['draft_max']} min={s['draft_min']}"),
    Method("ngram-mod", "ngram-mod", "#009E73", {
        "n_match": Key(24, (int,), minimum=1, maximum=1024, help="n-gram length looked up"),
        **_draft_n(64, 48, " (--spec-ngram-mod-n-max)")},
        flags=lambda s: ["--spec-ngram-mod-n-match", str(s["n_match"]), "--spec-ngram-mod-n-min",
                         str(s["draft_min"]), "--spec-ngram-mod-n-max", str(s["draft_max"])],
        n_max=lambda s: s["draft_max"], make=_make_ngram_mod,
        title=lambda s: f"ngram-mod n={s['n_match']} min={s['draft_min']} max={s['draft_max']}"),
    # ngram-simple: llama.cpp parses --spec-ngram-simple-min-hits but never reads it, so it is no key here
    Method("ngram-simple", "ngram-simple", "#56B4E9", _ngram_map(hits=None), flags=_map_flags("ngram-simple", False),
           n_max=lambda s: s["size_m"], make=_make_ngram_simple,
           title=lambda s: f"ngram-simple n={s['size_n']} m={s['size_m']}"),
    Method("ngram-map-k", "ngram-map-k", "#117733", _ngram_map(), flags=_map_flags("ngram-map-k", True),
           n_max=lambda s: s["size_m"], make=_make_ngram_map(True),
           title=lambda s: f"ngram-map-k n={s['size_n']} m={s['size_m']} hits={s['min_hits']}"),
    Method("ngram-map-k4v", "ngram-map-k4v", "#999933", _ngram_map(), flags=_map_flags("ngram-map-k4v", True),
           n_max=lambda s: s["size_m"], make=_make_ngram_map(False),
           title=lambda s: f"ngram-map-k4v n={s['size_n']} m={s['size_m']} hits={s['min_hits']}"),
    # drafters that read the target's hidden states: llama.cpp gives a hybrid target draft_max
    # recurrent-state snapshots for them (common_params_speculative::need_n_rs_seq), hence snapshot
    Method("dflash", "draft-dflash", "#CC79A7", {"drafter": DRAFTER,
                                                 **DRAFT_GPU, **DRAFT_PLACEMENT, **DRAFT_KV, **_draft_n(3, 0), **P_MIN},
           roles=("drafter",), context="drafter", rollback="snapshot", flags=_draft_flags,
           n_max=lambda s: s["draft_max"], make=_make_dflash, check=_check_dflash, title=_model_title("drafter"),
           capped=True),
    Method("dspark", "draft-dspark", "#AA4499", {"drafter": DRAFTER,
                                                 **DRAFT_GPU, **DRAFT_PLACEMENT, **DRAFT_KV, **_draft_n(3, 0), **P_MIN},
           roles=("drafter",), context="drafter", rollback="snapshot", flags=_draft_flags,
           n_max=lambda s: s["draft_max"], make=_make_dspark, check=_check_dspark, title=_model_title("drafter"),
           capped=True),
    Method("eagle3", "draft-eagle3", "#332288", {"drafter": DRAFTER,
                                                 **DRAFT_GPU, **DRAFT_PLACEMENT, **DRAFT_KV, **_draft_n(3, 0), **P_MIN},
           roles=("drafter",), context="drafter", rollback="snapshot", flags=_draft_flags,
           n_max=lambda s: s["draft_max"], make=_make_eagle3, check=_check_eagle3, title=_model_title("drafter")),
    Method("mtp", "draft-mtp", "#D55E00", {**DRAFT_KV, **_draft_n(3, 0), **P_MIN}, context="mtp", rollback="snapshot",
           flags=_draft_flags, n_max=lambda s: s["draft_max"], make=_make_mtp, check=_check_mtp,
           title=lambda s: f"mtp max={s['draft_max']} min={s['draft_min']}"),
]

METHODS: dict[str, Method] = {m.name: m for m in _REGISTRY}
NAMES = tuple(METHODS)
SPECULATIVE = tuple(n for n in NAMES if n != "baseline")
OTHER_COLOR = "#8c564b"


def get(name: str) -> Method:
    return METHODS[name]


def rank(name: str) -> int:
    """The page's order of methods: the table's."""
    return NAMES.index(name) if name in METHODS else len(NAMES)


def color(name: str) -> str:
    return METHODS[name].color if name in METHODS else OTHER_COLOR


def keys_of(name: str) -> dict[str, Key]:
    """Every key a cell of this method reads: the matrix-wide ones, the method's own and, for a
    speculative method, synthetic acceptance; defaults are the method's."""
    from specsweep.matrix.keys import COMMON
    m = METHODS[name]
    keys = {**COMMON, **m.keys, **(SYNTH if m.speculative else {})}
    if m.rollback != COMMON["rollback"].default:
        keys["rollback"] = Key(m.rollback, *_rest(COMMON["rollback"]))
    return keys


def _rest(key: Key) -> tuple:
    return key.types, key.choices, key.minimum, key.maximum, key.help


def all_keys() -> dict[str, Key]:
    """Every key any method reads (first definition wins for the help text)."""
    out: dict[str, Key] = {}
    for name in NAMES:
        for k, v in keys_of(name).items():
            out.setdefault(k, v)
    return out


def readers(key: str) -> tuple[str, ...]:
    """The methods that read `key`."""
    return tuple(n for n in NAMES if key in keys_of(n))


def with_defaults(settings: dict) -> dict:
    """A method's settings with every key it reads filled in with its default (for code that
    builds a cell's drafter or command line without a matrix: tests, benchmarks)."""
    keys = keys_of(settings["method"])
    return {**{k: v.default for k, v in keys.items() if v.default is not None}, **settings}


def native_flags(settings: dict) -> list[str]:
    """The llama.cpp flags (`--spec-type` and the method's own) a cell's settings map to; model
    files (-md) and the rest of the command line are the caller's."""
    m = METHODS[settings["method"]]
    if m.spec_type is None:
        return []
    flags = ["--spec-type", m.spec_type, *m.flags(settings)]
    if settings.get("synth_len") is not None:
        flags += ["--spec-synth-len", f"{float(settings['synth_len']):g}"]
    if settings.get("synth_rates"):
        flags += ["--spec-synth-rates", ",".join(f"{float(r):g}" for r in settings["synth_rates"])]
    return flags
