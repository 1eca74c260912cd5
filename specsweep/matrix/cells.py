"""A cell: one fully specified configuration, the unit that is measured, recorded and resumed.

Its `id` is a hash of what it measures (method, parameters, models, KV type, ...), not of its name,
row or trial count: renaming a row or raising `trials` keeps the finished trials, changing a
parameter makes a new cell.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from specsweep import methods
from specsweep.acceptance import resolve_rates
from specsweep.errors import SpecsweepError
from specsweep.matrix.keys import MODEL_KEYS
from specsweep.matrix.models import ModelRef
from specsweep.models.placement import TARGET_KEYS, target_spec

# settings that say how much to measure, not what: they stay out of the id
# (trace_experts adds a replay after each trial, outside its timed loop: the trial measures the same)
NOT_IDENTITY = {"trials", "warmup", "trace_experts"}
# keys added after records existed, left out of the id at their neutral value, so that a new key
# does not turn every recorded cell into a new one (resume and the report match by id)
NEUTRAL = {"split_mode": "none", "tensor_split": [], "lookup_prior_runs": 0, "ignore_eos": False,
           "override_tensor": [], "n_cpu_moe": 0, "draft_n_cpu_moe": 0,
           "backend": "inprocess", "parallel": 1, "loop": "simple"}
# what a cell is measured and checked against: the baseline of the same reference key gives its
# reference tokens and its paired speed. The settings that change the generated tokens (a
# placement too: experts computed on the host may round otherwise than on the GPU), and the
# backend and the number of streams (a server's tokens and speed are compared with a server
# baseline's, four streams with four streams).
REFERENCE_KEYS = ("target", "kv", "flash_attn", "gpus", "n_predict", "prompts", "prompt_kinds", "chat", "thinking",
                  "ignore_eos", *TARGET_KEYS, "backend", "parallel")
# keys added after references existed: out of the key while unset or neutral
LATER_KEYS = ("thinking", "ignore_eos", *TARGET_KEYS, "backend", "parallel")


@dataclass(frozen=True)
class Cell:
    name: str
    settings: dict  # every key of keys.ALL_KEYS the method reads, defaults filled in
    models: dict  # role ("target", "draft", "drafter") -> ModelRef
    id: str

    def __getattr__(self, key):
        try:
            return self.__dict__["settings"][key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def method(self) -> str:
        return self.settings["method"]

    def identity(self) -> dict:
        d = {k: v for k, v in self.settings.items()
             if k not in NOT_IDENTITY and k not in MODEL_KEYS and not (k in NEUTRAL and v == NEUTRAL[k])}
        d.update({role: ref.identity for role, ref in self.models.items()})
        return d

    def draws_key(self) -> str:
        """What a synthetic cell's seeds derive from (methods.trial_seed): its identity without the
        backend and the loop, so the same config draws alike in process and through llama-server."""
        d = {k: v for k, v in self.identity().items() if k not in ("backend", "loop")}
        return _digest(d)

    @property
    def draft_gpus(self) -> tuple[int, ...]:
        """Where the draft model (or drafter) goes: `draft_gpu`, else with the target."""
        gpu = self.settings.get("draft_gpu")
        return (gpu,) if gpu is not None and self.settings.get("gpus") else tuple(self.settings.get("gpus", ()))

    def reference_key(self) -> str:
        """Cells with the same key must generate the same tokens as the baseline. Keys added later
        (thinking, ignore_eos) stay out while unset or neutral, so recorded references still match."""
        d = {k: self.settings.get(k) for k in REFERENCE_KEYS if k != "target"
             and not (k in LATER_KEYS and self.settings.get(k) in (None, NEUTRAL.get(k)))}
        d["target"] = self.models["target"].identity
        return _digest(d)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def make_cell(name: str | None, values: dict, models: dict[str, ModelRef], label: str, matrix_path: Path) -> Cell:
    method = values["method"]
    spec = methods.get(method)
    if "target" not in values:
        raise SpecsweepError(f"{label}: no target model")
    for role in spec.roles:
        if role not in values:
            raise SpecsweepError(f"{label}: method {method!r} needs a {role} model ({role} = NAME)")
    if values.get("draft_min", 0) > values.get("draft_max", 1 << 30):
        raise SpecsweepError(f"{label}: draft_min {values['draft_min']} > draft_max {values['draft_max']}")
    n_max = spec.n_max(values)
    if spec.speculative and n_max + 1 > values["n_batch"]:
        raise SpecsweepError(f"{label}: a verify batch of {n_max} drafted + 1 tokens does not fit "
                             f"n_batch {values['n_batch']}")
    if spec.speculative:
        _check_synth(values, n_max, label)
    _check_backend(values, spec, n_max, label)
    gpus = values["gpus"]
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise SpecsweepError(f"{label}: gpus must be a list of distinct GPU indices, e.g. [0] or [0, 1]")
    split = values["tensor_split"]
    if split and (len(split) != len(gpus) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                      and x >= 0 for x in split) or sum(split) <= 0):
        raise SpecsweepError(f"{label}: tensor_split must give one non-negative share per GPU of {gpus}")
    if values.get("draft_gpu") is not None and not gpus:
        raise SpecsweepError(f"{label}: draft_gpu needs the target on a GPU too (gpus is empty)")
    target_spec(values, label)  # placement keys: their syntax, and vram_budget alone
    if not all(isinstance(k, str) for k in values["prompt_kinds"]):
        raise SpecsweepError(f"{label}: prompt_kinds must be a list of strings")
    if len(gpus) < 2:  # nothing to split: one layout, one cell
        values["split_mode"], values["tensor_split"] = "none", []
    roles = {role: models[values[role]] for role in MODEL_KEYS if role in values}
    fields = {k: values[k] for k in values}
    cell_name = _format_name(name, values, label) + _run_by(values, name) if name else _default_name(values)
    cell = Cell(cell_name, fields, roles, "")
    object.__setattr__(cell, "id", _digest(cell.identity()))
    return cell


def _check_backend(values: dict, spec, n_max: int, label: str) -> None:
    """What each backend can run (specsweep/backends/)."""
    streams, server = values.get("parallel", 1), values.get("backend") == "server"
    if values.get("trace_experts") and (server or streams > 1):
        raise SpecsweepError(f"{label}: trace_experts replays one in-process stream; it cannot trace "
                             f"{'llama-server' if server else f'{streams} streams'} (backend = \"inprocess\", parallel = 1)")
    if server and values.get("lookup_prior_runs"):
        raise SpecsweepError(f"{label}: lookup_prior_runs cannot run through llama-server (it keeps its own "
                             f"n-gram cache); use backend = \"inprocess\"")
    if streams > 1 and not server:
        if streams * (n_max + 1) > values["n_batch"]:
            raise SpecsweepError(f"{label}: {streams} streams' verify batches of {n_max} drafted + 1 tokens do not "
                                 f"fit one decode of n_batch {values['n_batch']}")


def _check_synth(values: dict, n_max: int, label: str) -> None:
    """Synthetic acceptance, checked as llama.cpp does as far as the settings tell. A drafter whose
    file caps its draft (DFlash's block size) may end up with a smaller limit: rates up to the
    configured one pass here and are checked again against the file before the run."""
    rates = values.get("synth_rates")
    if rates is not None and not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in rates):
        raise SpecsweepError(f"{label}: synth_rates must be a list of numbers, e.g. [0.8, 0.6, 0.4]")
    if values.get("synth_len") is None and not rates:
        return
    if rates and methods.get(values["method"]).capped and len(rates) <= n_max:
        n_max = len(rates)
    try:
        resolve_rates(values.get("synth_len"), rates, n_max)
    except SpecsweepError as e:
        raise SpecsweepError(f"{label}: {e.message}") from None


def _format_name(template: str, values: dict, label: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise SpecsweepError(f"{label}: name {template!r} names an unknown field {e}") from None


def _run_by(values: dict, template: str) -> str:
    """" [server]" and " xN" (streams), unless the name template places them itself: the same
    config through two backends or at several concurrencies keeps apart in tables."""
    out = ""
    if values.get("backend") == "server" and "{backend" not in template:
        out += " [server]"
    if values.get("parallel", 1) > 1 and "{parallel" not in template:
        out += f" x{values['parallel']}"
    return out


def _default_name(values: dict) -> str:
    name = methods.get(values["method"]).title(values) + _run_by(values, "")
    if values.get("synth_len") is not None:
        name += f" synth L={values['synth_len']:g}"
    elif values.get("synth_rates"):
        name += " synth rates=" + ",".join(f"{r:g}" for r in values["synth_rates"])
    return name + placement_label(values)


def placement_label(values: dict) -> str:
    """The placement keys a cell sets, short, for its default name: " ncmoe=20 vram=24GiB"."""
    short = {"n_cpu_moe": "ncmoe", "n_gpu_layers": "ngl", "vram_budget": "vram", "draft_n_cpu_moe": "draft-ncmoe"}
    out = "".join(f" {label}={values[k]}" for k, label in short.items() if values.get(k) is not None)
    if values.get("override_tensor"):
        out += f" ot={len(values['override_tensor'])}"
    return out
