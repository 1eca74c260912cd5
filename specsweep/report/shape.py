"""Records -> what the report page draws: plain data, no plotly, so that it can be tested alone.

- `configs`: one row per (source, cell): tok/s mean/min/max, change against the baseline that
  shares the cell's reference key (as in the run's table), acceptance, lossless trials and the time
  split per generated token;
- `panels`: one per target model and KV type, its rows grouped by method;
- `prompt_points`: one point per trial, against the baseline's mean on the same prompt, so that
  prompts that speed up and prompts that slow down stay apart instead of averaging out;
- `probe_curves`: T(K)/T(1), the byte prediction and the break-even acceptance per probe record;
- `header`: the machines, software and model files behind every source;
- `outputs`: what each config generated per prompt (stored outputs), and where its tokens first
  part from the baseline's on the same prompt.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from specsweep import methods
from specsweep.analysis.records import acceptance_label
from specsweep.records import outputs as stored
from specsweep.records.sources import Source
from specsweep.report.summary import cell_stats, lossless_text

TIME_PARTS = ("draft", "verify", "rollback", "host")
# settings that may tell two same-named cells of one panel apart
_IDENTITY_SKIP = {"trials", "warmup", "method", "target"}


def method_rank(method: str) -> int:
    return methods.rank(method)


@dataclass
class Config:
    source: str  # the source's label
    panel: tuple[str, str]  # (target model file, KV type)
    key: str  # the row label: the cell's name, made unique within its source and panel
    cell_id: str
    name: str
    method: str
    settings: dict
    models: dict
    reference_key: str
    tps: list[float]
    n_drafted: int
    n_accepted: int
    n_lossless: int
    n_trials: int
    baseline: float | None  # the baseline's mean tok/s
    change: float | None  # mean / baseline - 1
    ms_per_token: dict  # TIME_PARTS -> mean ms per generated token, None where not recorded (a server)
    order: int = 0
    n_synthetic: int = 0  # synthetic-acceptance trials (no lossless verdict)
    drafted_per_token: float | None = None  # draft economy (summary.CellStats)
    ckpt_mb_per_token: float | None = None
    n_throttled: int = 0  # trials whose GPU telemetry saw a throttle reason
    configured_acceptance: float | None = None  # synthetic acceptance: what the settings ask for

    @property
    def lossless(self) -> str:
        return lossless_text(self.n_lossless, self.n_synthetic, self.n_trials)

    @property
    def all_lossless(self) -> bool:
        return self.n_lossless == self.n_trials - self.n_synthetic

    @property
    def mean(self) -> float:
        return statistics.fmean(self.tps)

    @property
    def lo(self) -> float:
        return min(self.tps)

    @property
    def hi(self) -> float:
        return max(self.tps)

    @property
    def acceptance(self) -> float | None:
        return self.n_accepted / self.n_drafted if self.n_drafted else None

    @property
    def acceptance_text(self) -> str:
        """"41.2%"; a synthetic config's "41.2% drawn, 32.8% set" (blank when nothing was drafted)."""
        return acceptance_label(self.acceptance, self.configured_acceptance)

    @property
    def speedup(self) -> float | None:
        return None if self.change is None else 1 + self.change


@dataclass
class Panel:
    key: tuple[str, str]
    title: str
    rows: list[str]  # row labels over every source, grouped by method
    methods: dict[str, str]  # row label -> method
    sources: list[str]  # source labels with rows here
    configs: dict[tuple[str, str], Config] = field(default_factory=dict)  # (source, row) -> config

    def baselines(self, source: str) -> list[float]:
        return sorted({c.baseline for (s, _), c in self.configs.items() if s == source and c.baseline})


def _panel_of(trial: dict) -> tuple[str, str]:
    target = (trial.get("models") or {}).get("target") or {}
    name = target.get("file") or target.get("name") or (trial.get("settings") or {}).get("target") or "?"
    return name, str((trial.get("settings") or {}).get("kv", "?"))


def _ms_per_token(trials: list[dict]) -> dict:
    out = {}
    for part in TIME_PARTS:
        # a server's records have no split (None): they stay out of the parts they lack
        vals = [(t["time_s"].get(part) or 0.0) * 1e3 / t["n_generated"] for t in trials
                if isinstance(t.get("time_s"), dict) and t.get("n_generated") and t["time_s"].get(part, 0.0) is not None]
        out[part] = statistics.fmean(vals) if vals else None  # blank on the page, not a measured zero
    return out


def _distinct_settings(cells: list[dict]) -> list[str]:
    """For same-named cells: the settings that differ, as `key=value` labels, one per cell."""
    keys = sorted({k for c in cells for k in c} - _IDENTITY_SKIP)
    differ = [k for k in keys if len({repr(c.get(k)) for c in cells}) > 1]
    return [", ".join(f"{k}={c.get(k)}" for k in differ) for c in cells]


def configs(sources: list[Source]) -> list[Config]:
    out: list[Config] = []
    for source in sources:
        trials = [t for t in source.trials if t.get("decode_tps") is not None and t.get("cell_id")]
        if not trials:
            continue
        stats = {s.cell_id: s for s in cell_stats(trials)}
        by_cell: dict[str, list[dict]] = defaultdict(list)
        for t in trials:
            by_cell[t["cell_id"]].append(t)
        baselines = {s.reference_key: s.mean for s in stats.values() if s.method == "baseline"}
        rows = []
        for order, (cell_id, ts) in enumerate(by_cell.items()):
            s, first = stats[cell_id], ts[0]
            rows.append(Config(source.label, _panel_of(first), first["cell"], cell_id, first["cell"], first["method"],
                               first.get("settings") or {}, first.get("models") or {}, first.get("reference_key", ""),
                               s.tps, s.n_drafted, s.n_accepted, s.n_lossless, s.n_trials,
                               baselines.get(s.reference_key), s.vs_baseline, _ms_per_token(ts), order, s.n_synthetic,
                               s.drafted_per_token, s.ckpt_mb_per_token if s.ckpt_bytes else None, s.n_throttled,
                               s.configured_acceptance))
        same: dict[tuple, list[Config]] = defaultdict(list)
        for c in rows:
            same[(c.panel, c.name)].append(c)
        for group in same.values():
            if len(group) > 1:
                for c, extra in zip(group, _distinct_settings([g.settings for g in group])):
                    c.key = f"{c.name} [{extra or c.cell_id}]"
        out.extend(rows)
    return out


def panels(rows: list[Config]) -> list[Panel]:
    """One panel per (target model, KV type), in the order first seen; rows grouped by method,
    then by source, then in the order the cells were measured (the matrix's order)."""
    found: dict[tuple[str, str], Panel] = {}
    first_seen: dict[tuple, tuple[int, int]] = {}
    for i, c in enumerate(rows):
        p = found.get(c.panel)
        if p is None:
            p = found[c.panel] = Panel(c.panel, f"{c.panel[0]} · KV {c.panel[1]}", [], {}, [])
        if c.source not in p.sources:
            p.sources.append(c.source)
        p.configs[(c.source, c.key)] = c
        p.methods.setdefault(c.key, c.method)
        # a source's configs stay together; one that several sources share sits where it first appeared
        first_seen.setdefault((c.panel, c.key), (p.sources.index(c.source), c.order, i))
    for p in found.values():
        keys = list(p.methods)
        p.rows = sorted(keys, key=lambda k: (method_rank(p.methods[k]), first_seen[(p.key, k)]))
    return list(found.values())


@dataclass
class TrialPoint:
    source: str
    panel: tuple[str, str]
    key: str
    method: str
    prompt: str
    trial: int
    tps: float
    change: float | None  # against the baseline's mean on this prompt
    acceptance: float | None
    lossless: bool
    synthetic: bool = False  # synthetic acceptance: no lossless verdict
    configured_acceptance: float | None = None  # its config's synthetic acceptance setting

    @property
    def acceptance_text(self) -> str:
        return acceptance_label(self.acceptance, self.configured_acceptance)


def prompt_points(sources: list[Source], rows: list[Config]) -> list[TrialPoint]:
    keys = {(c.source, c.cell_id): c for c in rows}
    out = []
    for source in sources:
        base: dict[tuple[str, str], list[float]] = defaultdict(list)
        for t in source.trials:
            if t.get("method") == "baseline" and t.get("decode_tps") is not None:
                base[(t.get("reference_key", ""), t.get("prompt_id", t.get("prompt")))].append(t["decode_tps"])
        means = {k: statistics.fmean(v) for k, v in base.items()}
        for t in source.trials:
            c = keys.get((source.label, t.get("cell_id")))
            if c is None:
                continue
            b = means.get((t.get("reference_key", ""), t.get("prompt_id", t.get("prompt"))))
            out.append(TrialPoint(source.label, c.panel, c.key, c.method, str(t.get("prompt", "?")),
                                  int(t.get("trial", 0)), t["decode_tps"],
                                  t["decode_tps"] / b - 1 if b else None, t.get("acceptance"), bool(t.get("lossless")),
                                  bool(t.get("synthetic")), c.configured_acceptance))
    return out


@dataclass
class PromptRow:
    source: str
    panel: tuple[str, str]
    key: str
    prompt: str
    tps: list[float]
    changes: list[float]
    acceptance: float | None
    configured_acceptance: float | None = None  # its config's synthetic acceptance setting

    @property
    def acceptance_text(self) -> str:
        return acceptance_label(self.acceptance, self.configured_acceptance)


def prompt_rows(points: list[TrialPoint]) -> list[PromptRow]:
    grouped: dict[tuple, list[TrialPoint]] = defaultdict(list)
    for p in points:
        grouped[(p.source, p.panel, p.key, p.prompt)].append(p)
    out = []
    for (source, panel, key, prompt), ps in grouped.items():
        acc = [p.acceptance for p in ps if p.acceptance is not None]
        out.append(PromptRow(source, panel, key, prompt, [p.tps for p in ps],
                             [p.change for p in ps if p.change is not None], statistics.fmean(acc) if acc else None,
                             ps[0].configured_acceptance))
    return out


@dataclass
class ProbeCurve:
    source: str
    label: str
    model: str
    kv: str
    outputs: str
    device: str
    t1_ms: float
    ks: list[int]
    ratio: list[float]
    median_ms: list[float]
    pred_ratio: list[float] | None  # MoE only: the expert-union byte prediction
    draft: str  # what the break-even assumes about the draft's cost
    n: list[int]  # draft lengths K-1 with a break-even
    break_even: list[float | None]  # None: even 100% acceptance loses
    max_speedup: list[float]
    switch_ratio: float | None  # a single-token step after a K = 2 batch, over T(1)


def probe_curves(sources: list[Source]) -> list[ProbeCurve]:
    out = []
    many = len([s for s in sources if s.probes]) > 1
    for source in sources:
        for p in source.probes:
            curve = [r for r in p.get("curve") or [] if r.get("k") and r.get("ratio") is not None]
            if not curve:
                continue
            model, settings, machine = p.get("model") or {}, p.get("settings") or {}, p.get("machine") or {}
            device = machine.get("gpu_name") if settings.get("gpus") else f"CPU {machine.get('cpu') or ''}".strip()
            draft = p.get("draft") or {}
            if draft.get("source") == "measured":
                dtext = f"draft {draft.get('model', '?')} {draft.get('ms_per_token', 0):.2f} ms/token"
            elif draft.get("source") == "given":
                dtext = f"draft {draft.get('ms_per_token', 0):.2f} ms/token (given)"
            else:
                dtext = "free draft"
            kv, outputs = str(settings.get("kv", "?")), str(settings.get("outputs", "?"))
            label = f"{model.get('file', '?')} · KV {kv} · {outputs} · {dtext}"
            if many:
                label += f" · {source.label}"
            be = [r for r in curve if r["k"] >= 2 and "break_even" in r]
            sw = (p.get("switch") or {}).get("median_ms")
            t1 = p.get("t1_ms") or curve[0].get("median_ms")
            out.append(ProbeCurve(
                source.label, label, str(model.get("file", "?")), kv, outputs, str(device or "?"), t1,
                [r["k"] for r in curve], [r["ratio"] for r in curve], [r.get("median_ms") for r in curve],
                [r.get("pred_ratio") for r in curve] if model.get("moe") else None, dtext,
                [r["k"] - 1 for r in be], [r["break_even"] for r in be], [r.get("max_speedup") for r in be],
                sw / t1 if sw and t1 else None))
    return out


def _run_facts(machine: dict, gpus: list[dict], started: str, matrix: str, models: dict) -> dict:
    """One run's setup line from a manifest or a probe record's machine facts (the same fields)."""
    return {
        "started": started,
        "gpus": ", ".join(f"{g.get('name')} ({g.get('memory_mib', '?')} MiB)" for g in gpus) or "none (CPU)",
        "driver": ", ".join(sorted({str(g.get("driver")) for g in gpus if g.get("driver")})) or "-",
        "cuda": machine.get("cuda") or "-",
        "cpu": f"{machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} CPUs)",
        "os": machine.get("os", "?"),
        "llama_cpp": machine.get("llama_cpp_commit", "?"),
        "llama_cpp_python": machine.get("llama_cpp_python", "?"),
        "specsweep": machine.get("specsweep", "?"),
        "matrix": matrix,
        "models": models,
    }


def header(source: Source) -> dict:
    """What was measured where: machine, software and model files, one entry per distinct run
    setup; nothing that names the host or a local path."""
    runs = []
    for m in source.manifests:
        used = sorted({g for t in source.trials if t.get("manifest") == m.get("id")
                       for g in (t.get("settings") or {}).get("gpus") or []})
        gpus = [g for g in m.get("gpus") or [] if not used or g.get("index") in used]
        models = {}
        for name, f in (m.get("models") or {}).items():
            file = f.get("file") or str(f.get("path", "?")).replace("\\", "/").rsplit("/", 1)[-1]
            models[file] = f.get("sha256", "")
        runs.append(_run_facts(m, gpus, m.get("started", ""),
                               str(m.get("matrix", "")).replace("\\", "/").rsplit("/", 1)[-1], models))
    for p in source.probes:
        machine, model = p.get("machine") or {}, p.get("model") or {}
        gpus = [g for g in machine.get("gpus") or [] if g.get("index") in ((p.get("settings") or {}).get("gpus") or [])]
        runs.append(_run_facts(machine, gpus, p.get("time", ""), "probe",
                               {str(model.get("file", "?")): model.get("sha256", "")}))
    # runs on one setup collapse into one line: dates joined, model files merged
    merged: dict[tuple, dict] = {}
    for r in runs:
        k = tuple(r[x] for x in ("gpus", "driver", "cuda", "cpu", "os", "llama_cpp", "llama_cpp_python", "specsweep",
                                 "matrix"))
        if k not in merged:
            merged[k] = dict(r, started=[r["started"]] if r["started"] else [], models=dict(r["models"]))
        else:
            if r["started"]:
                merged[k]["started"].append(r["started"])
            merged[k]["models"].update(r["models"])
    for r in merged.values():
        dates = sorted(r["started"])
        r["started"] = dates[0] if len(dates) == 1 else (f"{dates[0]} .. {dates[-1]} ({len(dates)} runs)" if dates else "")
    info = {"label": source.label, "name": source.name, "origin": source.origin, "runs": list(merged.values()),
            "n_trials": len(source.trials), "n_probes": len(source.probes)}
    meta = source.meta
    if source.origin == "contribution":
        info["contribution"] = {"card": meta.get("card"), "created": meta.get("created"),
                                "power_limit_w": meta.get("power_limit_w"), "clocks": meta.get("clocks"),
                                "notes": meta.get("notes")}
    return info


TEXT_CAP = 2000  # characters of a trial's text the page shows
EXCERPT = 60  # characters either side of where two outputs part


@dataclass
class Divergence:
    token: int  # the first token position where the ids differ (the shorter's end if one is a prefix)
    char: int | None  # the first character where the texts differ (None: the texts agree all the same)
    before: str  # up to EXCERPT characters both texts share just before `char`
    base: str  # the baseline's next EXCERPT characters from `char`
    this: str  # this config's


@dataclass
class OutputRow:
    source: str
    panel: tuple[str, str]
    key: str
    method: str
    prompt: str
    trial: int  # the trial whose output is shown
    n_tokens: int
    text: str  # cut at TEXT_CAP characters
    n_chars: int  # the whole text's length
    n_trials: int  # trials of this config and prompt with a stored output
    n_distinct: int  # distinct outputs (token ids) among them
    synthetic: bool
    base_tokens: int | None  # the baseline's output length; None: no baseline output (or this is the baseline)
    divergence: Divergence | None  # None: same tokens as the baseline, or nothing to compare with


def _first_trial(trials: list[dict]) -> dict:
    return min(trials, key=lambda t: (int(t.get("run") or 0), int(t.get("block") or 0), int(t.get("trial") or 0),
                                      -int(t.get("attempt") or 0)))


def _divergence(pos: int, base_text: str, this_text: str) -> Divergence:
    c = len(os.path.commonprefix([base_text, this_text]))
    char = None if base_text == this_text else c
    if char is None:
        return Divergence(pos, None, "", "", "")
    return Divergence(pos, char, base_text[max(0, c - EXCERPT):c], base_text[c:c + EXCERPT], this_text[c:c + EXCERPT])


def outputs(sources: list[Source], rows: list[Config]) -> list[OutputRow]:
    """One row per (source, config, prompt) whose trials stored their output: the first trial's
    text, and for a speculative config the first position where its tokens differ from the first
    baseline trial with the same reference key and prompt."""
    keys = {(c.source, c.cell_id): c for c in rows}
    out = []
    for source in sources:
        ids: dict[int, list[int]] = {}
        groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for t in source.trials:
            if (source.label, t.get("cell_id")) not in keys:
                continue
            got = stored.ids(t)
            if got is None:
                continue
            ids[id(t)] = got
            groups[(t["cell_id"], str(t.get("prompt_id", t.get("prompt"))))].append(t)
        base = {}
        for (cell_id, prompt_id), ts in groups.items():
            if keys[(source.label, cell_id)].method == "baseline":
                first = _first_trial(ts)
                base.setdefault((first.get("reference_key", ""), prompt_id), first)
        for (cell_id, prompt_id), ts in groups.items():
            c = keys[(source.label, cell_id)]
            first = _first_trial(ts)
            text = stored.text(first) or ""
            ref = None if c.method == "baseline" else base.get((first.get("reference_key", ""), prompt_id))
            div = None
            if ref is not None:
                pos = stored.first_difference(ids[id(first)], ids[id(ref)])
                if pos is not None:
                    div = _divergence(pos, stored.text(ref) or "", text)
            out.append(OutputRow(
                source.label, c.panel, c.key, c.method, str(first.get("prompt", "?")), int(first.get("trial") or 0),
                len(ids[id(first)]), text[:TEXT_CAP], len(text), len(ts), len({tuple(ids[id(t)]) for t in ts}),
                bool(first.get("synthetic")), None if ref is None else len(ids[id(ref)]), div))
    return out
