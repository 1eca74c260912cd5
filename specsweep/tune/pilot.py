"""What `tune` measures before it ranks: the target's verify costs and each family's pilot.

- The probe (`specsweep probe`'s measurement): T(K), one target pass of K tokens, for every verify
  size the candidates can reach, with the tune's placement, KV type and threads, recorded in
  <out>/probe/probe.jsonl. `predict` prices a config's verify passes with it.
- The pilot (pilot.toml, see matrices.py): plain decoding and one config per family, one block of
  the user's prompts at one stream. Its records give each family's acceptance profile per draft
  position, how long and how often it drafts, and the loop's own costs on this card (drafting,
  verify beyond T(K), host work): what `predict` needs, measured on these prompts.
"""

from __future__ import annotations

from pathlib import Path

from specsweep.probe.measure import WARMUP

PROBE_REPS = 3


LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # the probe's default sizes, thinned: predict interpolates


def probe_ks(k_max: int) -> list[int]:
    """The probed sizes: the ladder up to the longest verify (a draft + 1), and it."""
    return sorted({k for k in LADDER if k <= k_max} | {1, k_max})


def probe(out: Path, target: Path, gpus: tuple[int, ...], kv: str, threads: int, k_max: int,
          n_cpu_moe: int | None) -> dict:
    """Time the target's passes of 1..k_max tokens and append the record (as `specsweep probe`
    does); returns it. Its T(1) also sizes the pilot before it starts."""
    from specsweep.engine import runtime
    from specsweep.models import placement
    from specsweep.probe import theory
    from specsweep.probe.command import build_record, machine_facts
    from specsweep.probe.measure import measure_curve
    from specsweep.records.store import JsonlFile

    spec = placement.target_spec({"n_cpu_moe": n_cpu_moe, "gpus": list(gpus)}, "tune")
    args = placement.load_args(spec)
    mb = theory.read_model_bytes(target)
    with runtime.Model(target, gpus, **args) as model:
        placed = placement.record_block(spec, model.loaded, None, placement.estimate(target, args, gpus))
        # a GPU's first passes of a shape capture its graph (two untimed, as the probe); a CPU's need one
        warmup = WARMUP if gpus else 1
        curve = measure_curve(model, probe_ks(k_max), 0, PROBE_REPS, "sampled", kv, 512, threads, warmup=warmup)
    machine = machine_facts(gpus, threads)
    record = build_record(target, mb, curve, {"source": "none", "ms_per_token": 0.0}, machine, gpus, 0, PROBE_REPS,
                          threads, None, placed, warmup=warmup)
    store = JsonlFile(out / "probe" / "probe.jsonl")
    try:
        store.append(record)
    finally:
        store.close()
    return record


def last_probe(out: Path) -> dict | None:
    """The tune's own probe record, the newest if it probed again."""
    from specsweep.records.store import read_jsonl

    probes = [r for r in read_jsonl(out / "probe" / "probe.jsonl") if r.get("kind") == "probe"]
    return probes[-1] if probes else None


def read_t1_ms(out: Path) -> float | None:
    p = last_probe(out)
    return float(p["t1_ms"]) if p else None


def pilot_seconds(t1_ms: float, n_cells: int, n_prompts: int, n_predict: int, warmup: int,
                  prompt_tokens: int = 256) -> float:
    """A rough duration of the pilot from the probe's T(1): every cell generates n_predict tokens per
    prompt (and per warm-up) and prefills its prompt; twice that for the loop's own work around the
    passes (Python, drafting). It only decides whether the budget can hold a pilot at all."""
    per_trial = (n_predict + prompt_tokens / 8) * t1_ms / 1e3
    return 2.0 * n_cells * (n_prompts + warmup) * per_trial

