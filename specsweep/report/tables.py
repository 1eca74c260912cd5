"""The page's tables, as escaped HTML: per config (tok/s, change, acceptance, draft economy, time
split), per prompt, a probe's verify cost, what each config generated, and the machines and
software behind each source."""

from __future__ import annotations

import statistics

from specsweep.report import shape
from specsweep.report.style import SYNTHETIC_BADGE, cell, change_cls, esc, method_color, num, pct


def header_html(info: dict) -> str:
    rows = []
    c = info.get("contribution")
    origin = {"results": "results folder", "records": "records file", "contribution": "contribution"}.get(
        info["origin"], info["origin"])
    rows.append(("source", f"{esc(origin)} <code>{esc(info['name'])}</code>: {info['n_trials']} trials, "
                           f"{info['n_probes']} probes"))
    if c:
        extra = [f"contributed {esc(c['created'])}" if c.get("created") else "",
                 f"power limit {esc(c['power_limit_w'])} W" if c.get("power_limit_w") is not None else "power limit unknown"]
        clocks = c.get("clocks") or {}
        if clocks.get("graphics_mhz") or clocks.get("memory_mhz"):
            extra.append(f"clocks {esc(clocks.get('graphics_mhz') or '?')} / {esc(clocks.get('memory_mhz') or '?')} MHz "
                         f"(graphics / memory)")
        rows.append(("contribution", "; ".join(x for x in extra if x)))
        if c.get("notes"):
            rows.append(("notes", esc(c["notes"])))
    for run in info["runs"]:
        rows.append(("GPU", esc(run["gpus"])))
        rows.append(("driver / CUDA", f"{esc(run['driver'])} / {esc(run['cuda'])}"))
        rows.append(("CPU / OS", f"{esc(run['cpu'])} / {esc(run['os'])}"))
        rows.append(("llama.cpp", f"<code>{esc(run['llama_cpp'])}</code> (llama-cpp-python {esc(run['llama_cpp_python'])},"
                                  f" specsweep {esc(run['specsweep'])})"))
        what = f"matrix <code>{esc(run['matrix'])}</code>" if run["matrix"] != "probe" else "verify-cost probe"
        rows.append(("run", f"{what}, {esc(run['started'])}"))
        models = "<br>".join(f"{esc(f)} <code>{esc(sha or 'sha256 not recorded')}</code>"
                             for f, sha in run["models"].items())
        rows.append(("models", models or "-"))
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<div class="card"><h3>{esc(info["label"])}</h3><table>{body}</table></div>'


def config_table(panel: shape.Panel, sources: list[str]) -> str:
    many = len(sources) > 1
    head = (["card"] if many else []) + ["config", "method", "trials", "tok/s mean", "min", "max", "vs base",
                                         "accept", "drafted/tok", "ckpt MB/tok", "lossless"] + [
        f"{p} ms/tok" for p in shape.TIME_PARTS]
    out = ["<table class='data'><tr>" + "".join(f"<th class='{'l' if h in ('card', 'config', 'method') else ''}'>"
                                                 f"{esc(h)}</th>" for h in head) + "</tr>"]
    for k in panel.rows:
        for src in sources:
            cfg = panel.configs.get((src, k))
            if cfg is None:
                continue
            cells = ([cell(esc(src), "l")] if many else []) + [
                cell(esc(cfg.key) + (SYNTHETIC_BADGE if cfg.n_synthetic else "")
                      + (f" <span class='badge warn' title='telemetry saw a throttle reason'>throttled "
                         f"{cfg.n_throttled}/{cfg.n_trials}</span>" if cfg.n_throttled else ""), "l"),
                cell(f'<span class="dot" style="background:{method_color(cfg.method)}"></span>{esc(cfg.method)}', "l"),
                cell(str(cfg.n_trials)), cell(num(cfg.mean)), cell(num(cfg.lo)), cell(num(cfg.hi)),
                cell("" if cfg.method == "baseline" else (pct(cfg.change) or "n/a"), change_cls(cfg.change)
                      if cfg.method != "baseline" else ""),
                cell(esc(cfg.acceptance_text)),
                cell("" if cfg.method == "baseline" or cfg.drafted_per_token is None else f"{cfg.drafted_per_token:.2f}"),
                cell("" if cfg.ckpt_mb_per_token is None else f"{cfg.ckpt_mb_per_token:.2f}"),
                cell(esc(cfg.lossless), "" if cfg.all_lossless else "down"),
            ] + [cell(num(cfg.ms_per_token[p], 3)) for p in shape.TIME_PARTS]
            out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def prompt_table(rows: list[shape.PromptRow], panel: shape.Panel, sources: list[str]) -> str:
    many = len(sources) > 1
    head = (["card"] if many else []) + ["config", "prompt", "trials", "tok/s mean", "min", "max",
                                         "vs base (same prompt)", "accept"]
    out = ["<table class='data'><tr>" + "".join(f"<th class='{'l' if h in ('card', 'config', 'prompt') else ''}'>"
                                                 f"{esc(h)}</th>" for h in head) + "</tr>"]
    order = {k: i for i, k in enumerate(panel.rows)}
    mine = sorted((r for r in rows if r.panel == panel.key), key=lambda r: (order.get(r.key, 1 << 30),
                                                                           sources.index(r.source), r.prompt))
    for r in mine:
        change = statistics.fmean(r.changes) if r.changes else None
        cells = ([cell(esc(r.source), "l")] if many else []) + [
            cell(esc(r.key), "l"), cell(esc(r.prompt), "l"), cell(str(len(r.tps))),
            cell(num(statistics.fmean(r.tps))), cell(num(min(r.tps))), cell(num(max(r.tps))),
            cell(pct(change), change_cls(change)),
            cell(esc(r.acceptance_text))]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def probe_table(c: shape.ProbeCurve) -> str:
    be = dict(zip([n + 1 for n in c.n], zip(c.break_even, c.max_speedup)))
    rows = [("T(K) ms", [f"{v:.3f}" if v is not None else "" for v in c.median_ms]),
            ("T(K)/T(1)", [f"{v:.2f}" for v in c.ratio])]
    if c.pred_ratio:
        rows.append(("B(K)/B(1) predicted", [f"{v:.2f}" if v is not None else "" for v in c.pred_ratio]))
    rows.append(("break-even acceptance", ["-" if k not in be else ("never" if be[k][0] is None else f"{be[k][0]:.3f}")
                                           for k in c.ks]))
    rows.append(("speedup at 100%", ["-" if k not in be or be[k][1] is None else f"{be[k][1]:.2f}x" for k in c.ks]))
    head = "<tr><th class='l'>K</th>" + "".join(f"<th>{k}</th>" for k in c.ks) + "</tr>"
    body = "".join("<tr><td class='l'>" + esc(name) + "</td>" + "".join(f"<td>{esc(v)}</td>" for v in vals) + "</tr>"
                   for name, vals in rows)
    sw = f"; a single-token step after a K = 2 batch: {c.switch_ratio:.2f}x T(1)" if c.switch_ratio else ""
    return (f"<h3>{esc(c.label)}</h3><p class='note'>{esc(c.device)}, T(1) = {c.t1_ms:.3f} ms{esc(sw)}</p>"
            f"<div style='overflow-x:auto'><table class='data'>{head}{body}</table></div>")


def _excerpt(before: str, part: str) -> str:
    """Text either side of where two outputs part, the part marked; newlines shown as ↵."""
    def show(x: str) -> str:
        return esc(x).replace("\n", "↵")
    lead = "…" if len(before) >= shape.EXCERPT else ""
    tail = "…" if len(part) >= shape.EXCERPT else ""
    return f"{lead}{show(before)}<mark>{show(part) if part else '(end)'}</mark>{tail}"


def outputs_table(rows: list[shape.OutputRow], panel: shape.Panel, sources: list[str]) -> str:
    many = len(sources) > 1
    head = (["card"] if many else []) + ["config", "prompt", "tokens", "against the baseline", "where they part",
                                         "text"]
    out = ["<table class='data outputs'><tr>" + "".join(
        f"<th class='{'' if h == 'tokens' else 'l'}'>{esc(h)}</th>"
        for h in head) + "</tr>"]
    order = {k: i for i, k in enumerate(panel.rows)}
    mine = sorted((r for r in rows if r.panel == panel.key),
                  key=lambda r: (order.get(r.key, 1 << 30), sources.index(r.source) if r.source in sources else 0,
                                 r.prompt))
    for r in mine:
        d = r.divergence
        cls = ""
        if r.method == "baseline":
            verdict, where = "the reference", ""
        elif r.base_tokens is None:
            verdict, where = "no baseline output to compare with", ""
        elif d is None:
            verdict, where, cls = "same tokens", "", "up"
        else:
            verdict = f"first differs at token {d.token} (of {r.n_tokens}; baseline {r.base_tokens})"
            if r.synthetic:
                verdict += " — synthetic acceptance: by design"
            where = ("the texts read the same (the tokens split it differently)" if d.char is None else
                     f"baseline: {_excerpt(d.before, d.base)}<br>this: {_excerpt(d.before, d.this)}")
        spread = "" if r.n_distinct == 1 else f" Its {r.n_trials} trials gave {r.n_distinct} different outputs."
        cut = "" if r.n_chars <= len(r.text) else f" The first {len(r.text):,} of {r.n_chars:,} characters shown."
        if r.n_chars:
            text = (f"<details><summary>trial {r.trial}: {r.n_chars:,} characters</summary><pre>{esc(r.text)}</pre>"
                    f"<span class='note'>{esc((spread + cut).strip())}</span></details>")
        else:
            text = f"trial {r.trial}: no text (its tokens decode to nothing).{esc(spread)}"
        cells = ([cell(esc(r.source), "l")] if many else []) + [
            cell(esc(r.key) + (SYNTHETIC_BADGE if r.synthetic else ""), "l"), cell(esc(r.prompt), "l"),
            cell(str(r.n_tokens)), cell(verdict, f"l {cls}".strip()), cell(where, "ex"), cell(text, "l")]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)
