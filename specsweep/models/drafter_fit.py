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
from specsweep.models.header import field, open_gguf, trunk_layers
from specsweep.models.vocab_match import check_pair


def _arch(reader) -> str:
    return str(field(reader, "general.architecture", ""))


def check_dflash(target_name: str, target_path: Path, drafter_name: str, drafter_path: Path) -> None:
    t, d = open_gguf(target_path, target_name), open_gguf(drafter_path, drafter_name)
    if _arch(d) != "dflash":
        raise SpecsweepError(f"model {drafter_name} is not a DFlash drafter (architecture {_arch(d)!r})")
    layers = [int(x) for x in field(d, "dflash.target_layers", []) or []]
    if not layers:
        raise SpecsweepError(f"DFlash drafter {drafter_name} names no target layers (dflash.target_layers)")
    depth = trunk_layers(t)
    outside = [x for x in layers if not 0 <= x < depth]
    if outside:
        raise SpecsweepError(f"DFlash drafter {drafter_name} reads target layers {outside}, but {target_name} "
                             f"has {depth} layers: it was made for another target")
    n_embd_t = int(field(t, f"{_arch(t)}.embedding_length", 0))
    n_embd_d = int(field(d, "dflash.embedding_length", 0))
    if n_embd_t != n_embd_d:
        raise SpecsweepError(f"DFlash drafter {drafter_name} has hidden size {n_embd_d}, {target_name} has "
                             f"{n_embd_t}: it was made for another target")
    fc = next((x for x in d.tensors if x.name == "fc.weight"), None)
    if fc is not None and int(fc.shape[0]) != len(layers) * n_embd_t:
        raise SpecsweepError(f"DFlash drafter {drafter_name}: fc reads {int(fc.shape[0])} features, but "
                             f"{len(layers)} layers of {target_name} give {len(layers) * n_embd_t}")
    if field(d, "tokenizer.ggml.mask_token_id") is None:
        raise SpecsweepError(f"DFlash drafter {drafter_name} has no mask token (tokenizer.ggml.mask_token_id)")
    check_pair(target_name, target_path, drafter_name, drafter_path)


def check_mtp(target_name: str, target_path: Path) -> None:
    t = open_gguf(target_path, target_name)
    arch = _arch(t)
    n = int(field(t, f"{arch}.nextn_predict_layers", 0))
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


def check_cell_models(models: dict, method: str, path_of, settings: dict | None = None) -> None:
    """The header checks a cell's method needs (specsweep/methods.py names them); `path_of(ref)`
    gives a model's file."""
    from specsweep import methods
    check = methods.get(method).check
    if check is not None:
        check(models, settings or {}, path_of)
