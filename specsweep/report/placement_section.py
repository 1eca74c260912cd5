"""The page's "Where the weights were": one row per source, target and placement, when any trial
placed its target otherwise than llama.cpp's default (n_cpu_moe, override_tensor, n_gpu_layers or
vram_budget; docs/matrix.md, "Where the weights live").

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
from specsweep.report.page import _num, esc

GIB = 2**30


def _gib(n: float | None) -> str:
    return "" if n is None else f"{n / GIB:.2f}"


def section(sources) -> str:
    """The HTML of the section, or "" when every trial ran with llama.cpp's default placement."""
    groups: dict[tuple, list[dict]] = {}
    for s in sources:
        for t in rec.kept(s.trials):
            if rec.usable(t):
                groups.setdefault((s.label, rec.target_label(t), rec.placement_of(t)), []).append(t)
    if not any(placed for _, _, placed in groups):
        return ""
    body = []
    for (source, target, placed), trials in sorted(groups.items()):
        block = next((t["placement"] for t in trials if t.get("placement")), {})
        device = sum(b for name, b in (block.get("buffers") or {}).items() if not is_host_buffer(name)) \
            if block.get("buffers") else None
        host = ((block.get("estimate") or {}).get("weights") or {}).get("host")
        fit = block.get("fit") or {}
        fit_text = ""
        if fit:
            ngl = "all" if fit.get("n_gpu_layers") is None else fit["n_gpu_layers"]
            fit_text = f"-ngl {ngl}, {len(fit.get('override_tensor') or [])} -ot ({fit.get('source', '?')})"
        base = [float(t["decode_tps"]) for t in trials if rec.is_baseline(t)]
        cells = [source, target, placed or "every layer on the GPU", _gib(device), _gib(host),
                 str(block.get("overridden_tensors", "")), fit_text, _num(statistics.fmean(base) if base else None)]
        body.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in cells) + "</tr>")
    head = ("<tr><th>source</th><th>target</th><th>placement</th><th>GPU GiB (llama.cpp)</th>"
            "<th>host GiB (estimate)</th><th>tensors overridden</th><th>fit chose</th><th>baseline tok/s</th></tr>")
    return ("<h2>Where the weights were</h2>\n<p class='note'>Each placement's target weights on the GPU (the "
            "device buffers llama.cpp reported while loading) and on the host (the header's estimate: llama.cpp's "
            "mapped-file buffer spans tensors that went to the GPU too), with its plain-decoding speed. Configs are "
            "paired with the baseline of their own placement, and the analysis keeps each placement's cost lines "
            "apart.</p>\n"
            f"<div style='overflow-x:auto'><table class='data'>{head}{''.join(body)}</table></div>\n")
