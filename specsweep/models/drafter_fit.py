"""Does a DFlash drafter fit its target, and does a target carry MTP layers? Read from the GGUF
headers only, so that a bad pairing stops a run with one line before any weights load.

What llama.cpp would otherwise find out mid-run, or abort on: a drafter reads the input of target
layers by index (`dflash.target_layers`, each below the target's trunk depth), projects their
concatenation with `fc` (its input width is layers x the target's hidden size), shares the target's
token embeddings and output head (so the hidden sizes and vocabularies must agree), and drafts
with a mask token. `mtp` needs the target's `nextn_predict_layers` (GGUFs converted without them
have none), and specsweep runs the single-head MTP of Qwen3.5/3.6.
"""

from __future__ import annotations

from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models import overrides as kv
from specsweep.models.header import field, open_gguf, trunk_layers
from specsweep.models.vocab_match import PairCheck, check_pair


def _arch(reader) -> str:
    return str(field(reader, "general.architecture", ""))


def _parsed(overrides, name: str, reader) -> tuple:
    found = kv.parse_overrides(list(overrides), f"model {name}")
    kv.check_against_header(found, reader, name)
    return found


def check_dflash(target_name: str, target_path: Path, drafter_name: str, drafter_path: Path,
                 target_overrides=(), drafter_overrides=()) -> PairCheck:
    t, d = open_gguf(target_path, target_name), open_gguf(drafter_path, drafter_name)
    to, do = _parsed(target_overrides, target_name, t), _parsed(drafter_overrides, drafter_name, d)
    if _arch(d) != "dflash":
        raise SpecsweepError(f"model {drafter_name} is not a DFlash drafter (architecture {_arch(d)!r})")
    layers = [int(x) for x in field(d, "dflash.target_layers", []) or []]  # an array: no override
    if not layers:
        raise SpecsweepError(f"DFlash drafter {drafter_name} names no target layers (dflash.target_layers)")
    depth = trunk_layers(t, to)
    outside = [x for x in layers if not 0 <= x < depth]
    if outside:
        raise SpecsweepError(f"DFlash drafter {drafter_name} reads target layers {outside}, but {target_name} "
                             f"has {depth} layers: it was made for another target")
    n_embd_t = int(field(t, f"{_arch(t)}.embedding_length", 0, to))
    n_embd_d = int(field(d, "dflash.embedding_length", 0, do))
    if n_embd_t != n_embd_d:
        raise SpecsweepError(f"DFlash drafter {drafter_name} has hidden size {n_embd_d}, {target_name} has "
                             f"{n_embd_t}: it was made for another target")
    fc = next((x for x in d.tensors if x.name == "fc.weight"), None)
    if fc is not None and int(fc.shape[0]) != len(layers) * n_embd_t:
        raise SpecsweepError(f"DFlash drafter {drafter_name}: fc reads {int(fc.shape[0])} features, but "
                             f"{len(layers)} layers of {target_name} give {len(layers) * n_embd_t}")
    if field(d, "tokenizer.ggml.mask_token_id", None, do) is None:
        raise SpecsweepError(f"DFlash drafter {drafter_name} has no mask token (tokenizer.ggml.mask_token_id)")
    return check_pair(target_name, target_path, drafter_name, drafter_path, target_overrides=to, draft_overrides=do)


def check_mtp(target_name: str, target_path: Path, target_overrides=()) -> None:
    t = open_gguf(target_path, target_name)
    arch = _arch(t)
    n = int(field(t, f"{arch}.nextn_predict_layers", 0, _parsed(target_overrides, target_name, t)))
    if n == 0:
        raise SpecsweepError(f"model {target_name} has no MTP layers ({arch}.nextn_predict_layers): method "
                             f"mtp needs a GGUF converted with them")
    if n != 1:
        raise SpecsweepError(f"model {target_name} has {n} MTP layers; specsweep runs single-head MTP "
                             f"(Qwen3.5/3.6) only")


def pairing(method: str, models: dict, settings: dict | None = None) -> tuple:
    """What the header checks of a cell depend on: cells with the same pairing are checked once."""
    p_min = float((settings or {}).get("p_min", 0.0)) > 0.0  # a DSpark drafter's p_min needs its head
    return method, tuple(sorted((role, ref.name) for role, ref in models.items())), p_min


def check_cell_models(models: dict, method: str, path_of, settings: dict | None = None,
                      overrides_of=None) -> PairCheck | None:
    """The header checks a cell's method needs (specsweep/methods.py names them); `path_of(ref)`
    gives a model's file, `overrides_of(ref)` its override_kv (default: the lock's and the matrix's,
    specsweep.matrix.models.model_overrides). Returns the vocabulary outcome of a pair that has
    one; raises where llama.cpp would refuse."""
    from specsweep import methods
    if overrides_of is None:
        from specsweep.matrix.models import model_overrides as overrides_of
    check = methods.get(method).check
    return check(models, settings or {}, path_of, overrides_of) if check is not None else None
