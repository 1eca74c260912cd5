"""The page's "Where the weights were": one row per source, target and placement, when any trial
or probe placed its target otherwise than llama.cpp's default (n_cpu_moe, override_tensor,
n_gpu_layers or vram_budget; docs/matrix.md, "Where the weights live"). A probe's row gives its
plain step, T(1), where a matrix's row gives its baseline's tok/s: a placement that was only probed
(a 24 GiB fit of a model too large to run a matrix of, say) still says what it costs.

Bytes on the GPU are llama.cpp's own device buffers from the load log. Bytes on the host are the
header's estimate: llama.cpp's `CPU_Mapped` buffer is the span of the file it maps, which can
include tensors that went to the GPU, so it does not say what the host computes with. The
baseline's tok/s of each placement sits beside it: what giving the experts to the host costs
before any speculation.
"""

from __future__ import annotations

import statistics

from specsweep.analysis import records as rec
from specsweep.models.placement import is_host_buffer
from specsweep.records.attempts import kept
from specsweep.report.style import esc, num

GIB = 2**30


def _gib(n: float | None) -> str:
    return "" if n is None else f"{n / GIB:.2f}"


def _t1_text(found: list[dict], newest: dict) -> str:
    """The newest probe's T(1); with repeats, their range too: with experts on the host, probes minutes
    apart differed by 2x on the H200's host (predict pools the repeats' passes)."""
    t1s = [float(p["t1_ms"]) for p in found if p.get("t1_ms") is not None]
    if newest.get("t1_ms") is None:
        return ""
    text = num(newest["t1_ms"])
    return text + (f" ({len(t1s)} probes: {min(t1s):.1f}-{max(t1s):.1f})" if len(t1s) > 1 else "")


def _row(source: str, target: str, placed: str, block: dict, base_tps: float | None, t1: str) -> str:
    device = sum(b for name, b in (block.get("buffers") or {}).items() if not is_host_buffer(name)) \
        if block.get("buffers") else None
    host = ((block.get("estimate") or {}).get("weights") or {}).get("host")
    fit = block.get("fit") or {}
    fit_text = ""
    if fit:
        ngl = "all" if fit.get("n_gpu_layers") is None else fit["n_gpu_layers"]
        fit_text = f"-ngl {ngl}, {len(fit.get('override_tensor') or [])} -ot ({fit.get('source', '?')})"
    cells = [source, target, placed or "every layer on the GPU", _gib(device), _gib(host),
             str(block.get("overridden_tensors", "")), fit_text, num(base_tps), t1]
    return "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in cells) + "</tr>"


def section(sources) -> str:
    """The HTML of the section, or "" when every trial and probe ran with llama.cpp's default placement."""
    groups: dict[tuple, list[dict]] = {}
    probes: dict[tuple, list[dict]] = {}
    for s in sources:
        for t in kept(s.trials):
            if rec.usable(t):
                groups.setdefault((s.label, rec.target_label(t), rec.placement_of(t)), []).append(t)
        for p in s.probes:
            file = str((p.get("model") or {}).get("file") or "unknown target")
            probes.setdefault((s.label, file, rec.placement_of(p)), []).append(p)
    if not any(placed for _, _, placed in [*groups, *probes]):
        return ""
    body = []
    for (source, target, placed), trials in sorted(groups.items()):
        block = next((t["placement"] for t in trials if t.get("placement")), {})
        base = [float(t["decode_tps"]) for t in trials if rec.is_baseline(t)]
        body.append(_row(source, target, placed, block, statistics.fmean(base) if base else None, ""))
    for (source, target, placed), found in sorted(probes.items()):
        newest = max(found, key=lambda p: str(p.get("time") or ""))
        label = source if "probe" in source else source + " (probe)"
        body.append(_row(label, target, placed, newest.get("placement") or {}, None, _t1_text(found, newest)))
    head = ("<tr><th>source</th><th>target</th><th>placement</th><th>GPU GiB (llama.cpp)</th>"
            "<th>host GiB (estimate)</th><th>tensors overridden</th><th>fit chose</th><th>baseline tok/s</th>"
            "<th>probe T(1) ms (newest; repeats' range)</th></tr>")
    return ("<h2>Where the weights were</h2>\n<p class='note'>Each placement's target weights on the GPU (the "
            "device buffers llama.cpp reported while loading) and on the host (the header's estimate: llama.cpp's "
            "mapped-file buffer spans tensors that went to the GPU too), with its plain-decoding speed: a matrix's "
            "baseline tok/s, or a probe's single-token step T(1). Configs are paired with the baseline of their own "
            "placement, and the analysis keeps each placement's cost lines apart.</p>\n"
            f"<div style='overflow-x:auto'><table class='data'>{head}{''.join(body)}</table></div>\n")
