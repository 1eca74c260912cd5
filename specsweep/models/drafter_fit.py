"""Does a DFlash drafter fit its target, and does a target carry MTP layers? Read from the GGUF
headers only, so that a bad pairing stops a run with one line before any weights load.

What llama.cpp would otherwise find out mid-run, or abort on: a drafter reads the input of target
layers by index (`dflash.target_layers`, each below the target's trunk depth), projects their
concatenation with `fc` (its input width is layers x the target's hidden size), shares the target's
token embeddings and output head (so the hidden sizes and vocabularies must agree), and drafts
with a mask token. `mtp` needs the target's `nextn_predict_layers` (GGUFs converted without them
have none), and specsweep runs the single-head MTP of Qwen3.5/3.6.

EAGLE-3 (arch `eagle3`) reads exactly 3 target layers (`eagle3.target_layers`: a layer's input, or
the final hidden state for an id equal to the target's layer count; llama.cpp aborts on a larger
one) of `eagle3.target_hidden_size` each through `fc`, and borrows the target's token embeddings
and output head unless it has its own. DSpark is a DFlash drafter with a Markov head
(`markov_w1`/`markov_w2`); a minimum draft probability (p_min > 0) needs its confidence head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models import overrides as kv
from specsweep.models.header import field, mtp_layers, open_gguf, trunk_layers
from specsweep.models.vocab_match import PairCheck, check_pair


def _arch(reader) -> str:
    return str(field(reader, "general.architecture", ""))


def _parsed(overrides, name: str, reader) -> tuple:
    found = kv.parse_overrides(list(overrides), f"model {name}")
    kv.check_against_header(found, reader, name)
    return found


def _tensor(reader, name: str):
    return next((x for x in reader.tensors if x.name == name), None)


def _flag(reader, key: str, absent: bool) -> bool:
    """A boolean key as llama.cpp reads it through llama_model_meta_val_str: "true" is true."""
    value = field(reader, key)
    if value is None:
        return absent
    return value if isinstance(value, bool) else str(value) == "true"


def check_dflash(target_name: str, target_path: Path, drafter_name: str, drafter_path: Path,
                 target_overrides=(), drafter_overrides=()) -> PairCheck:
    t, d = open_gguf(target_path, target_name), open_gguf(drafter_path, drafter_name)
    to, do = _parsed(target_overrides, target_name, t), _parsed(drafter_overrides, drafter_name, d)
    _check_dflash_fit(t, target_name, d, drafter_name, "DFlash", to, do)
    return check_pair(target_name, target_path, drafter_name, drafter_path, target_overrides=to, draft_overrides=do)


def _check_dflash_fit(t, target_name: str, d, drafter_name: str, kind: str, to=(), do=()) -> None:
    """What a drafter of llama.cpp's dflash arch (DFlash, or DSpark: `kind`) needs of its target."""
    if _arch(d) != "dflash":
        raise SpecsweepError(f"model {drafter_name} is not a {kind} drafter (architecture {_arch(d)!r})")
    layers = [int(x) for x in field(d, "dflash.target_layers", []) or []]  # an array: no override
    if not layers:
        raise SpecsweepError(f"{kind} drafter {drafter_name} names no target layers (dflash.target_layers)")
    depth = trunk_layers(t, to)
    outside = [x for x in layers if not 0 <= x < depth]
    if outside:
        raise SpecsweepError(f"{kind} drafter {drafter_name} reads target layers {outside}, but {target_name} "
                             f"has {depth} layers: it was made for another target")
    n_embd_t = int(field(t, f"{_arch(t)}.embedding_length", 0, to))
    n_embd_d = int(field(d, "dflash.embedding_length", 0, do))
    if n_embd_t != n_embd_d:
        raise SpecsweepError(f"{kind} drafter {drafter_name} has hidden size {n_embd_d}, {target_name} has "
                             f"{n_embd_t}: it was made for another target")
    fc = _tensor(d, "fc.weight")
    if fc is not None and int(fc.shape[0]) != len(layers) * n_embd_t:
        raise SpecsweepError(f"{kind} drafter {drafter_name}: fc reads {int(fc.shape[0])} features, but "
                             f"{len(layers)} layers of {target_name} give {len(layers) * n_embd_t}")
    if field(d, "tokenizer.ggml.mask_token_id", None, do) is None:
        raise SpecsweepError(f"{kind} drafter {drafter_name} has no mask token (tokenizer.ggml.mask_token_id)")


@dataclass(frozen=True)
class Eagle3Layout:
    """What llama.cpp reads of an EAGLE-3 drafter (llama_model_eagle3::load_arch_hparams/tensors)."""
    target_layers: tuple[int, ...]  # a target layer's input; the target's layer count: its final hidden state
    target_hidden_size: int  # 0 when the key is missing (llama.cpp then refuses to load it)
    n_embd: int
    own_token_embd: bool  # False: borrows the target's through ctx_other
    own_output: bool
    d2t: bool  # a reduced draft vocabulary mapped onto the target's
    norm_before_residual: bool
    norm_before_fc: bool


@dataclass(frozen=True)
class DSparkLayout:
    """What llama.cpp reads of a DSpark drafter (common_speculative_impl_draft_dflash with is_dspark,
    build_dspark_markov_head)."""
    target_layers: tuple[int, ...]
    block_size: int
    sample_from_anchor: bool  # slot 0 of the block is a prediction (else a bonus anchor, as DFlash)
    has_conf_head: bool  # conf_proj is there and dflash.has_confidence_head does not say false
    conf_head_key: bool  # what llama.cpp's p_min check reads: dflash.has_confidence_head, absent = true
    markov_rank: int
    causal: bool

    @property
    def n_draft_max(self) -> int:
        """Draft tokens one block gives: llama.cpp clamps n_max to it."""
        return self.block_size if self.sample_from_anchor else self.block_size - 1


def eagle3_layout(path: Path, name: str | None = None) -> Eagle3Layout:
    """An EAGLE-3 drafter's layout from its GGUF header; SpecsweepError when it is not one."""
    name = name or Path(path).name
    return _eagle3_layout(open_gguf(path, name), name)


def _eagle3_layout(d, name: str) -> Eagle3Layout:
    if _arch(d) != "eagle3":
        raise SpecsweepError(f"model {name} is not an EAGLE-3 drafter (architecture {_arch(d)!r})")
    return Eagle3Layout(
        target_layers=tuple(int(x) for x in field(d, "eagle3.target_layers", []) or []),
        target_hidden_size=int(field(d, "eagle3.target_hidden_size", 0) or 0),
        n_embd=int(field(d, "eagle3.embedding_length", 0) or 0),
        own_token_embd=_tensor(d, "token_embd.weight") is not None,
        own_output=_tensor(d, "output.weight") is not None,
        d2t=_tensor(d, "d2t") is not None,
        norm_before_residual=_flag(d, "eagle3.norm_before_residual", False),
        norm_before_fc=_flag(d, "eagle3.norm_before_fc", False),
    )


def dspark_layout(path: Path, name: str | None = None) -> DSparkLayout:
    """A DSpark drafter's layout from its GGUF header; SpecsweepError when it is not one."""
    name = name or Path(path).name
    return _dspark_layout(open_gguf(path, name), name)


def _dspark_layout(d, name: str) -> DSparkLayout:
    if _arch(d) != "dflash":
        raise SpecsweepError(f"model {name} is not a DSpark drafter (architecture {_arch(d)!r})")
    w1, w2 = _tensor(d, "markov_w1.weight"), _tensor(d, "markov_w2.weight")
    if w1 is None or w2 is None:
        raise SpecsweepError(f"model {name} is not a DSpark drafter: it has no Markov head (markov_w1/markov_w2); "
                             f"a DFlash drafter runs as method dflash")
    block = field(d, "dflash.block_size")
    if block is None:  # the Markov head's graph asserts it (common/speculative.cpp would assume 16)
        raise SpecsweepError(f"DSpark drafter {name} has no dflash.block_size, which llama.cpp's Markov head needs")
    key = _flag(d, "dflash.has_confidence_head", True)
    return DSparkLayout(
        target_layers=tuple(int(x) for x in field(d, "dflash.target_layers", []) or []),
        block_size=int(block),
        sample_from_anchor=_flag(d, "dflash.sample_from_anchor", True),
        has_conf_head=key and _tensor(d, "conf_proj.weight") is not None,
        conf_head_key=key,
        markov_rank=int(w1.shape[0]),
        causal=_flag(d, "dflash.attention.causal", False),
    )


def dspark_p_min_error(p_min: float, layout: DSparkLayout, drafter_name: str) -> str | None:
    """Why a DSpark drafter cannot draft with this minimum probability (None: it can). llama.cpp
    stops a DSpark draft at the confidence head's estimate below p_min, so p_min > 0 needs that
    head; it throws when the GGUF says there is none."""
    if p_min <= 0:
        return None
    if not layout.conf_head_key:
        return (f"DSpark drafter {drafter_name} has no confidence head (dflash.has_confidence_head = false), "
                f"so p_min {p_min:g} cannot apply: llama.cpp refuses it (\"please set --spec-draft-p-min 0\")")
    if not layout.has_conf_head:
        return (f"DSpark drafter {drafter_name} claims a confidence head but has no conf_proj tensor, so "
                f"p_min {p_min:g} would read confidences llama.cpp never computes")
    return None


def check_dspark(target_name: str, target_path: Path, drafter_name: str, drafter_path: Path,
                 target_overrides=(), drafter_overrides=(), p_min: float = 0.0) -> PairCheck:
    """check_dflash's checks for a DSpark drafter, its Markov head, and a confidence head when
    the cell drafts with p_min > 0."""
    t, d = open_gguf(target_path, target_name), open_gguf(drafter_path, drafter_name)
    to, do = _parsed(target_overrides, target_name, t), _parsed(drafter_overrides, drafter_name, d)
    layout = _dspark_layout(d, drafter_name)
    _check_dflash_fit(t, target_name, d, drafter_name, "DSpark", to, do)
    error = dspark_p_min_error(p_min, layout, drafter_name)
    if error:
        raise SpecsweepError(error)
    return check_pair(target_name, target_path, drafter_name, drafter_path, target_overrides=to, draft_overrides=do)


def check_eagle3(target_name: str, target_path: Path, drafter_name: str, drafter_path: Path,
                 target_overrides=(), drafter_overrides=()) -> PairCheck:
    t, d = open_gguf(target_path, target_name), open_gguf(drafter_path, drafter_name)
    to, do = _parsed(target_overrides, target_name, t), _parsed(drafter_overrides, drafter_name, d)
    e = _eagle3_layout(d, drafter_name)
    if len(e.target_layers) != 3:
        raise SpecsweepError(f"EAGLE-3 drafter {drafter_name} names {len(e.target_layers)} target layers "
                             f"(eagle3.target_layers {list(e.target_layers)}); llama.cpp needs exactly 3")
    depth = trunk_layers(t, to)
    outside = [x for x in e.target_layers if not 0 <= x <= depth]
    if outside:  # llama.cpp aborts (GGML_ABORT) on an id above the target's layer count
        raise SpecsweepError(f"EAGLE-3 drafter {drafter_name} reads target layers {outside}, but {target_name} "
                             f"has {depth} layers (ids up to {depth}, its final hidden state): it was made "
                             f"for another target")
    n_embd_t = int(field(t, f"{_arch(t)}.embedding_length", 0, to))
    if e.target_hidden_size != n_embd_t:
        raise SpecsweepError(f"EAGLE-3 drafter {drafter_name} reads target features of size "
                             f"{e.target_hidden_size} (eagle3.target_hidden_size), {target_name} has hidden size "
                             f"{n_embd_t}: it was made for another target")
    fc = _tensor(d, "fc.weight")
    if fc is not None and int(fc.shape[0]) != 3 * n_embd_t:
        raise SpecsweepError(f"EAGLE-3 drafter {drafter_name}: fc reads {int(fc.shape[0])} features, but "
                             f"3 layers of {target_name} give {3 * n_embd_t}")
    if not (e.own_token_embd and e.own_output) and e.n_embd != n_embd_t:
        borrowed = "token embeddings" if not e.own_token_embd else "output head"
        raise SpecsweepError(f"EAGLE-3 drafter {drafter_name} has hidden size {e.n_embd} but borrows the "
                             f"{borrowed} of {target_name}, of width {n_embd_t}")
    if e.own_token_embd:
        rows = int(_tensor(d, "token_embd.weight").shape[1])
        n_vocab_t = _n_tokens(t)
        if rows < n_vocab_t:
            raise SpecsweepError(f"EAGLE-3 drafter {drafter_name} embeds {rows} tokens, but {target_name}'s "
                                 f"vocabulary has {n_vocab_t}: its token ids would fall outside")
    return check_pair(target_name, target_path, drafter_name, drafter_path, target_overrides=to, draft_overrides=do)


def _n_tokens(reader) -> int:
    f = reader.fields.get("tokenizer.ggml.tokens")
    return len(f.data) if f is not None else 0


def check_mtp(target_name: str, target_path: Path, target_overrides=()) -> None:
    t = open_gguf(target_path, target_name)
    arch = _arch(t)
    n = mtp_layers(t, _parsed(target_overrides, target_name, t))
    if n == 0:
        raise SpecsweepError(f"model {target_name} has no MTP layers ({arch}.nextn_predict_layers): method "
                             f"mtp needs a GGUF converted with them")
    if n != 1:
        raise SpecsweepError(f"model {target_name} has {n} MTP layers; specsweep runs single-head MTP "
                             f"(Qwen3.5/3.6) only")


def pairing(method: str, models: dict, settings: dict | None = None) -> tuple:
    """What the header checks of a cell depend on: cells with the same pairing are checked once
    (DSpark's also depend on whether the cell drafts with a minimum probability: its head)."""
    key = method, tuple(sorted((role, ref.name) for role, ref in models.items()))
    return key + (float((settings or {}).get("p_min", 0.0)) > 0,) if method == "dspark" else key


def check_cell_models(models: dict, method: str, path_of, settings: dict | None = None,
                      overrides_of=lambda ref: ()) -> PairCheck | None:
    """The header checks a cell's method needs (specsweep/methods.py names them); `path_of(ref)`
    gives a model's file, `overrides_of(ref)` its override_kv (a matrix's callers pass
    specsweep.matrix.models.model_overrides: the lock's and the matrix's). Returns the vocabulary
    outcome of a pair that has one; raises where llama.cpp would refuse."""
    from specsweep import methods
    check = methods.get(method).check
    return check(models, settings or {}, path_of, overrides_of) if check is not None else None


def check_cells(cells, path_of, overrides_of=lambda ref: ()) -> None:
    """check_cell_models for each pairing among `cells` (anything with .method, .models, .settings)
    once: what `run` and `tune` check before anything loads."""
    seen = set()
    for cell in cells:
        key = pairing(cell.method, cell.models, cell.settings)
        if key not in seen:
            seen.add(key)
            check_cell_models(cell.models, cell.method, path_of, cell.settings, overrides_of)
