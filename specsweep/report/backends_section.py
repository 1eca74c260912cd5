"""The page's side-by-side of backends and concurrency: the same cell in process and through
llama-server, each against its own backend's baseline, at each number of streams.

A row is one configuration (method, its parameters, models, KV, devices, streams) measured by at
least one backend; its cells give each backend's mean tok/s (aggregate over the streams when
`parallel` > 1, with the mean per-stream tok/s beside it) and its change against the baseline of the
same backend and streams. The last column is the difference of the two changes in points: what
the user of the other backend would conclude differently. Under the table, the server's own cost
per token: its baseline against the in-process baseline at one stream.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict

from specsweep.report import shape
from specsweep.report.style import esc, pct

# settings that say which backend ran a cell, or how much to measure: not part of "the same cell"
_NOT_THE_CELL = {"backend", "loop", "trials", "warmup"}


def _same_cell(c: shape.Config) -> str:
    settings = {k: v for k, v in c.settings.items() if k not in _NOT_THE_CELL}
    models = {role: m.get("sha256") or m.get("name") for role, m in (c.models or {}).items()}
    return json.dumps([c.source, settings, models], sort_keys=True, default=str)


def _stream_tps(trials: list[dict]) -> float | None:
    vals = [s["decode_tps"] for t in trials for s in t.get("streams") or [] if s.get("decode_tps")]
    return statistics.fmean(vals) if vals else None


def section(sources, rows: list[shape.Config]) -> str:
    """The HTML of the section, or "" when every row ran in process with one stream."""
    backend_of = {c.cell_id: c.settings.get("backend", "inprocess") for c in rows}
    if all(b == "inprocess" for b in backend_of.values()) and all(c.settings.get("parallel", 1) == 1 for c in rows):
        return ""
    # keyed by source too: cards that ran the same matrix share cell ids
    trials_of: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in sources:
        for t in s.trials:
            trials_of[(s.label, t.get("cell_id"))].append(t)
    table: dict[str, dict[str, shape.Config]] = defaultdict(dict)
    for c in rows:
        table[_same_cell(c)][backend_of[c.cell_id]] = c
    body = []
    stops: dict[tuple, dict[int, float]] = defaultdict(dict)  # (config, backend) -> streams -> change
    for by_backend in table.values():
        first = next(iter(by_backend.values()))
        config, streams = _config_name(first), first.settings.get("parallel", 1)
        for backend, c in by_backend.items():
            if c.method != "baseline" and c.change is not None:
                stops[(config, backend)][streams] = c.change
        cells = []
        for backend in ("inprocess", "server"):
            c = by_backend.get(backend)
            if c is None:
                cells += ["", "", ""]
                continue
            per_stream = _stream_tps(trials_of[(c.source, c.cell_id)])
            cells += [f"{c.mean:.1f}", "" if per_stream is None else f"{per_stream:.1f}", pct(c.change)]
        both = [by_backend.get(b) for b in ("inprocess", "server")]
        gap = ("" if None in both or both[0].change is None or both[1].change is None
               else f"{(both[1].change - both[0].change) * 100:+.1f}")
        body.append(((first.method != "baseline", config, streams), "<tr>" + "".join(
            f"<td>{esc(v)}</td>" for v in [config, first.panel[0], str(streams), *cells, gap]) + "</tr>"))
    body = [html for _, html in sorted(body)]
    head = ("<tr><th rowspan='2'>config</th><th rowspan='2'>target</th><th rowspan='2'>streams</th>"
            "<th colspan='3'>in process</th><th colspan='3'>llama-server</th><th rowspan='2'>server - in process "
            "(points)</th></tr><tr><th>tok/s</th><th>per stream</th><th>vs its baseline</th>"
            "<th>tok/s</th><th>per stream</th><th>vs its baseline</th></tr>")
    overhead = _overhead(rows, backend_of) + _where_it_stops(stops)
    return ("<h2>In process and through llama-server, by concurrency</h2>\n<p class='note'>The same config run "
            "by specsweep's engine and by llama.cpp's own llama-server, each against the baseline of its own "
            "backend and number of streams. With several streams, tok/s is the aggregate over all of them (what "
            "the server delivers in all) and per stream is what each request sees.</p>\n"
            f"<div style='overflow-x:auto'><table class='data'>{head}{''.join(body)}</table></div>\n{overhead}\n")


def _config_name(c: shape.Config) -> str:
    """The cell's name without the backend and stream count the runner appends to it."""
    return re.sub(r" x\d+$", "", c.name.replace(" [server]", ""))


def _where_it_stops(stops: dict[tuple, dict[int, float]]) -> str:
    """Per config and backend measured at several stream counts: the fewest streams at which it no
    longer beats its own baseline (the mean change, not a significance test)."""
    lines = []
    for (config, backend), by_streams in sorted(stops.items()):
        if len(by_streams) < 2:
            continue
        curve = ", ".join(f"{n}: {by_streams[n]:+.0%}" for n in sorted(by_streams))
        lost = [n for n in sorted(by_streams) if by_streams[n] <= 0]
        verdict = (f"stops paying at {lost[0]} streams" if lost and lost[0] > min(by_streams) else
                   "never pays" if lost else "still pays at every count measured")
        name = "llama-server" if backend == "server" else "in process"
        lines.append(f"<li>{esc(config)}, {name}: {verdict} ({curve})</li>")
    if not lines:
        return ""
    return ("<p class='note'>Where speculation stops paying (change against the same backend's baseline, by "
            "number of streams):</p><ul>" + "".join(lines) + "</ul>")


def _overhead(rows: list[shape.Config], backend_of: dict) -> str:
    """The server's per-token work at one stream: its baseline against the in-process one."""
    lines = []
    base = defaultdict(dict)
    for c in rows:
        if c.method == "baseline" and c.settings.get("parallel", 1) == 1:
            base[_same_cell(c)][backend_of[c.cell_id]] = c
    for pair in base.values():
        if {"inprocess", "server"} <= set(pair):
            a, b = pair["inprocess"], pair["server"]
            per_token = 1e3 / b.mean - 1e3 / a.mean
            lines.append(f"<li>{esc(a.panel[0])} ({esc(a.source)}): llama-server {b.mean:.1f} tok/s against "
                         f"{a.mean:.1f} in process ({b.mean / a.mean - 1:+.1%}; {per_token:+.3f} ms per token)</li>")
    if not lines:
        return ""
    return "<p class='note'>The server's own cost at one stream (baseline against baseline):</p><ul>" + "".join(lines) + "</ul>"
