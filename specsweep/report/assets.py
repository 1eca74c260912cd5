"""The page's machinery: its style sheet, the hooks that report on it (status, errors), the loader
that unpacks plotly.js and draws every figure, and a figure as HTML.

Every figure's JSON leaves out its template (plotly_white, 7 KB each): the page holds it once
(`#specsweep-template`) and the loader hands it to each figure.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.io.json import to_json_plotly

from specsweep.report.style import BAD, FONT, GOOD, figure_config

CSS = """
:root { --fg: #222; --muted: #666; --line: #e3e3e3; --bg: #fafafa; }
body { font-family: %s; color: var(--fg); margin: 0; background: white; }
main { max-width: 1400px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 27px; margin: 0 0 6px; }
h2 { font-size: 21px; margin: 38px 0 4px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.lead { color: var(--muted); margin: 0 0 16px; }
p.note { color: var(--muted); margin: 4px 0 10px; font-size: 14px; max-width: 1000px; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--bg);
        flex: 1 1 520px; font-size: 13px; }
.card h3 { margin: 2px 0 8px; font-size: 17px; }
.card table td { padding: 1px 10px 1px 0; vertical-align: top; }
.card table td:first-child { color: var(--muted); white-space: nowrap; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
ul.verdicts { margin: 6px 0; padding-left: 20px; }
ul.verdicts li { margin: 3px 0; }
table.data { border-collapse: collapse; font-size: 13px; margin: 6px 0 16px; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: right;
                               white-space: nowrap; }
table.data th { background: #f1f1f1; position: sticky; top: 0; }
table.data td.l, table.data th.l { text-align: left; }
table.data tr:nth-child(even) td { background: #fbfbfb; }
td.up { color: %s; font-weight: 600; } td.down { color: %s; font-weight: 600; }
span.dot { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
details { margin: 8px 0; } summary { cursor: pointer; color: #0b5cad; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
#specsweep-status, #specsweep-errors { display: none; }
#specsweep-message { border: 1px solid %s; color: %s; padding: 6px 10px; border-radius: 6px; }
span.badge { display: inline-block; font-size: 11px; padding: 0 5px; margin-left: 6px; border-radius: 3px;
             border: 1px solid #8a6d00; color: #8a6d00; background: #fff8e1; cursor: help; }
table.outputs td { white-space: normal; vertical-align: top; }
table.outputs td.ex { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px;
                      max-width: 640px; text-align: left; word-break: break-all; }
table.outputs mark { background: #ffe08a; }
ul.verdicts li.warn { color: #8a6d00; }
#specsweep-answer h2 { margin-top: 18px; }
table.answer td { white-space: normal; vertical-align: top; line-height: 1.45; overflow-wrap: break-word; }
table.answer td:first-child { min-width: 140px; max-width: 300px; }
table.answer td.verdict { min-width: 260px; max-width: 640px; }
table.answer code { word-break: break-all; }
.flags { color: var(--muted); font-size: 12px; }
details.flags { margin: 0; }
details > summary { margin: 2px 0; }
div.plotly-graph-div { margin: 10px 0 22px; }
table.outputs span.note { color: var(--muted); }
table.outputs pre { white-space: pre-wrap; word-break: break-all; max-width: 640px; max-height: 320px;
                    overflow-y: auto; margin: 4px 0; font-size: 12px; background: var(--bg); padding: 6px; }
""" % (FONT, GOOD, BAD, BAD, BAD)

HOOKS = """
(function () {
  var errors = [];
  var expected = %d, drawn = 0;
  function show() {
    var el = document.getElementById("specsweep-errors");
    if (el) { el.textContent = errors.join("\\n"); el.setAttribute("data-count", String(errors.length)); }
  }
  function note(msg) { errors.push(String(msg)); show(); }
  window.addEventListener("error", function (e) { note("error: " + (e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) {
    note("unhandled rejection: " + ((e.reason && e.reason.message) || e.reason));
  });
  var consoleError = console.error;
  console.error = function () {
    note("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return consoleError.apply(console, arguments);
  };
  window.specsweepDrawn = function (id) {
    var gd = document.getElementById(id);
    if (!gd || !gd.querySelector(".main-svg")) { note("figure " + id + " drew no SVG"); return; }
    drawn += 1;
    var st = document.getElementById("specsweep-status");
    st.setAttribute("data-drawn", String(drawn));
    if (drawn === expected) { st.setAttribute("data-ready", "yes"); }
  };
})();
"""


# Unpacks plotly.js (gzip, base64, in #specsweep-plotly), runs it, then draws every figure from its
# JSON. It sits at the end of <body>, after everything it reads.
LOADER = """
(function () {
  var st = document.getElementById("specsweep-status");
  function tell(msg) {
    var el = document.getElementById("specsweep-message");
    el.textContent = msg;
    el.hidden = false;
  }
  if (typeof DecompressionStream !== "function" || typeof Response !== "function" || !window.Blob ||
      !Blob.prototype.stream) {
    st.setAttribute("data-plotly", "unsupported");
    tell("The charts need a browser that can unpack gzip (DecompressionStream: Chrome 80+, Firefox 113+, " +
         "Safari 16.4+); the tables below hold every number.");
    return;
  }
  var packed = document.getElementById("specsweep-plotly");
  var bin = atob(packed.textContent.trim()), bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  new Response(stream).text().then(function (js) {
    var s = document.createElement("script");
    s.text = js + "\\n//# sourceURL=" + packed.getAttribute("data-file");
    document.head.appendChild(s);  // an inline script runs as it is inserted...
    s.remove();  // ...and keeps running once taken out: the DOM stays the page's own
    if (!window.Plotly) { throw new Error("plotly.js did not define Plotly"); }
    st.setAttribute("data-plotly", String(window.Plotly.version));
    var template = JSON.parse(document.getElementById("specsweep-template").textContent);
    Array.prototype.forEach.call(document.querySelectorAll("script[data-figure]"), function (el) {
      var id = el.getAttribute("data-figure"), fig = JSON.parse(el.textContent);
      fig.layout.template = template;
      window.Plotly.newPlot(id, fig.data, fig.layout, fig.config).then(function () {
        window.specsweepDrawn(id);
      }, function (e) { console.error("figure " + id + " did not draw: " + e); });
    });
  }).catch(function (e) {
    tell("The charts could not be drawn: " + e);
    console.error("plotly.js: " + e);
  });
})();
"""


def json_for_script(obj) -> str:
    """JSON that cannot end its <script> element: `<`, `>` and `&` only occur inside strings there,
    where a \\u escape reads the same."""
    return to_json_plotly(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def template_html() -> str:
    """The page's one copy of the figures' template (plotly_white)."""
    spec = go.Figure(layout=dict(template="plotly_white")).to_dict()["layout"]["template"]
    return f'<script type="application/json" id="specsweep-template">{json_for_script(spec)}</script>'


def figure_html(fig: go.Figure, div_id: str) -> str:
    spec = fig.to_dict()
    spec["layout"].pop("template", None)  # the page's one copy (template_html)
    spec["config"] = figure_config(div_id)
    return (f'<div id="{div_id}" class="plotly-graph-div" style="height:{int(fig.layout.height)}px; width:100%;">'
            f'</div>\n<script type="application/json" data-figure="{div_id}">{json_for_script(spec)}</script>')
