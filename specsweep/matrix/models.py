"""The models a matrix names, and where their GGUF files come from.

A `[models]` entry is one of:
- `"name"`: an entry of `models.lock`, fetched into the Hugging Face cache (`specsweep fetch`);
- `{ path = "file.gguf" }`: a file, relative to the matrix;
- `{ synth = "card", scale = "tiny", wtype = "Q4_0", seed = 0, perturb = 0.0, mtp = false, router_skew = 0.0 }`: a
  synthetic model (`specsweep synth`), written once into the specsweep cache and reused; `mtp`
  adds a Qwen3.5/3.6 card's multi-token-prediction layer, and a `*-dflash` card is a DFlash drafter
  (`*-eagle3`: EAGLE-3, with `own_embeddings`; `*-dspark`: DSpark, with `conf_head` and
  `sample_from_anchor`; unset, the card's choice). Same recipe, same
  bytes: a draft with the target's recipe *is* the target (100% acceptance), `perturb = f` gives
  partial acceptance, another `seed` or card gives about 0%.
A name a row uses that is not in `[models]` is looked up in `models.lock`.

Any table form takes `override_kv = ["KEY=TYPE:VALUE", ...]`, llama.cpp's `--override-kv` for that
model (specsweep.models.overrides); a models.lock name with overrides is `{ lock = "name",
override_kv = [...] }`. The list is part of the model's identity (it changes what loads), so it
makes new cells; a model without one keeps the identity it always had. A models.lock entry's own
`override_kv` applies first, the matrix's on top (`model_overrides`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models import overrides as kv
from specsweep.synth.cards import CARDS, DRAFTER_OPTIONS, SCALES, option_error
from specsweep.synth.fill import FILE_TYPE
from specsweep.synth.quants import mix_error

SYNTH_KEYS = {"synth": str, "scale": str, "wtype": str, "seed": int, "perturb": (float, int), "perturb_seed": int,
              "branch_scale": (float, int), "mtp": bool}
# drafter variants (synth/writer.py Recipe): only in an entry's identity when written, so entries
# without them keep their cell ids
SYNTH_KEYS.update({"conf_head": bool, "sample_from_anchor": bool, "own_embeddings": bool})
# a per-tensor quantization mix instead of wtype, and a MoE router's skew: likewise only in the
# identity when written
SYNTH_KEYS["quant"] = str
SYNTH_KEYS["router_skew"] = (float, int)


@dataclass(frozen=True)
class ModelRef:
    name: str
    kind: str  # "lock" | "path" | "synth"
    spec: tuple = field(default=())  # sorted (key, value) pairs as written

    @classmethod
    def locked(cls, name: str) -> "ModelRef":
        return cls(name, "lock", (("lock", name),))

    @property
    def identity(self) -> dict:
        """What the model is, for the cell id: changing it makes a new cell."""
        return dict(self.spec)

    @property
    def override_kv(self) -> tuple[str, ...]:
        """The matrix's `override_kv` for this model (a models.lock entry's own list: `model_overrides`)."""
        return tuple(self.identity.get("override_kv", ()))

    def describe(self) -> str:
        """Where the file comes from (records keep it as "ref"; the overrides are not part of it)."""
        d = self.identity
        if self.kind == "lock":
            return f"models.lock:{self.name}"
        if self.kind == "path":
            return d["path"]
        extra = "".join(f" {k}={d[k]}" for k in ("seed", "perturb", "branch_scale", "router_skew")
                        if d.get(k) not in (None, 0, 1))
        extra += " +mtp" if d.get("mtp") else ""
        extra += "".join(f" {k}={str(d[k]).lower()}" for k in DRAFTER_OPTIONS if k in d)
        return f"synth {d['synth']} ({d.get('scale', 'full')}, {d.get('quant') or d.get('wtype', 'Q4_0')}{extra})"


def parse_models(table: object, matrix_path: Path) -> dict[str, ModelRef]:
    where = f"{matrix_path} [models]"
    if not isinstance(table, dict):
        raise SpecsweepError(f"{where} must be a table")
    refs = {}
    for name, value in table.items():
        if isinstance(value, str):
            refs[name] = ModelRef(name, "lock", (("lock", value),))
            continue
        if isinstance(value, dict):
            value = _with_overrides(value, f"{where} {name}")
        if isinstance(value, dict) and set(value) - {"override_kv"} == {"lock"} and isinstance(value["lock"], str):
            refs[name] = ModelRef(name, "lock", tuple(sorted(value.items())))
        elif isinstance(value, dict) and set(value) - {"override_kv"} == {"path"} and isinstance(value["path"], str):
            refs[name] = ModelRef(name, "path", tuple(sorted(value.items())))
        elif isinstance(value, dict) and "synth" in value:
            refs[name] = ModelRef(name, "synth", tuple(sorted(_check_synth(value, f"{where} {name}").items())))
        else:
            raise SpecsweepError(f"{where} {name}: expected a models.lock name, {{ lock = NAME, override_kv = [...] }}, "
                                 f"{{ path = ... }} or {{ synth = CARD, ... }}")
    return refs


def _with_overrides(value: dict, where: str) -> dict:
    """The entry with `override_kv` checked and in its identity form (sorted, a tuple); an empty
    list is dropped, so that the model keeps the identity it has without one."""
    if "override_kv" not in value:
        return value
    value = dict(value)
    found = kv.parse_overrides(value.pop("override_kv"), where)
    if found:
        value["override_kv"] = kv.canonical(found)
    return value


def _check_synth(value: dict, where: str) -> dict:
    for key, v in value.items():
        if key == "override_kv":  # checked by _with_overrides
            continue
        if key not in SYNTH_KEYS:
            raise SpecsweepError(f"{where}: unknown synthetic-model key {key!r} "
                                 f"(expected: {', '.join(SYNTH_KEYS)}, override_kv)")
        if not isinstance(v, SYNTH_KEYS[key]) or (isinstance(v, bool) and SYNTH_KEYS[key] is not bool):
            raise SpecsweepError(f"{where}: {key} = {v!r} has the wrong type")
    if not isinstance(value["synth"], str) or value["synth"] not in CARDS:
        raise SpecsweepError(f"{where}: unknown card {value['synth']!r} (one of {', '.join(CARDS)})")
    if value.get("scale", "full") not in SCALES:
        raise SpecsweepError(f"{where}: scale must be one of {', '.join(SCALES)}")
    card = CARDS[value["synth"]]
    if value.get("scale", "full") not in card.scales:
        raise SpecsweepError(f"{where}: {card.name} has no {value['scale']} scale (it has {', '.join(card.scales)})")
    if value.get("wtype", "Q4_0") not in FILE_TYPE:
        raise SpecsweepError(f"{where}: wtype must be one of {', '.join(FILE_TYPE)}")
    if "quant" in value and "wtype" in value:
        raise SpecsweepError(f"{where}: give wtype (one type for every matrix) or quant (a per-tensor mix), not both")
    if "quant" in value and (error := mix_error(card, value["quant"])):
        raise SpecsweepError(f"{where}: {error}")
    if not 0.0 <= value.get("perturb", 0.0) <= 1.0:
        raise SpecsweepError(f"{where}: perturb must be between 0 and 1")
    if not 0.0 < value.get("branch_scale", 1.0) <= 1.0:
        raise SpecsweepError(f"{where}: branch_scale must be in (0, 1]")
    if not 0.0 <= value.get("router_skew", 0.0) <= 3.0:
        raise SpecsweepError(f"{where}: router_skew must be in [0, 3]")
    if value.get("router_skew") and not card.is_moe:
        raise SpecsweepError(f"{where}: router_skew shapes a MoE router; {card.name} is dense")
    if value.get("mtp") and CARDS[value["synth"]].arch not in ("qwen35", "qwen35moe"):
        raise SpecsweepError(f"{where}: mtp = true needs a Qwen3.5/3.6 card (qwen35 or qwen35moe)")
    error = option_error(CARDS[value["synth"]], **{k: value[k] for k in DRAFTER_OPTIONS if k in value})
    if error:
        raise SpecsweepError(f"{where}: {error}")
    return value


def resolve(ref: ModelRef, matrix_path: Path, create: bool = True) -> Path:
    """The GGUF file of a model: written (synth) or fetched (lock) when `create` and missing."""
    d = ref.identity
    if ref.kind == "path":
        path = (matrix_path.parent / d["path"]).resolve()
        if not path.is_file():
            raise SpecsweepError(f"model {ref.name}: file not found: {path}")
        return path
    if ref.kind == "synth":
        return _synth(ref, create)
    from specsweep.models.resolve import resolve_locked  # the models.lock side (issue 4)

    return resolve_locked(d["lock"], fetch=create)


def model_overrides(ref: ModelRef, lock_path: Path | None = None) -> tuple[str, ...]:
    """What to pass as `runtime.Model(..., override_kv=...)` for this model: a models.lock entry's
    own `override_kv`, then the matrix's on top (a key in both: the matrix's); () for none."""
    own = kv.parse_overrides(list(ref.override_kv), f"model {ref.name}")
    if ref.kind != "lock":
        return tuple(o.text for o in own)
    from specsweep.models import lockfile

    entry = lockfile.load(lock_path).get(ref.identity["lock"])
    return tuple(o.text for o in kv.merge(kv.parse_overrides(list(entry.override_kv), f"models.lock {entry.name}"), own))


def _synth(ref: ModelRef, create: bool) -> Path:
    from specsweep.synth.writer import Recipe, cached_path, write_cached

    d = ref.identity
    scale, wtype = d.get("scale", "full"), d.get("wtype", "Q4_0")
    recipe = Recipe(CARDS[d["synth"]].at_scale(scale), scale, wtype, d.get("seed", 0),
                    float(d.get("perturb", 0.0)), d.get("perturb_seed", 1), float(d.get("branch_scale", 1.0)),
                    bool(d.get("mtp", False)), **{k: d[k] for k in DRAFTER_OPTIONS if k in d}, quant=d.get("quant"),
                    router_skew=float(d.get("router_skew", 0.0)))
    return write_cached(recipe) if create else cached_path(recipe)
