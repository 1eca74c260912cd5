#!/usr/bin/env bash
# Re-draw every committed page in plots/ from the committed records (no GPU needed), and the README's
# screenshot of one (docs/first-screen.png, with Chromium). results/probe
# holds probes of several cards, so each page keeps to its own card (--card).
#   scripts/regenerate-plots.sh
set -euo pipefail
plot() { python3 -c 'from specsweep.cli import main; main()' plot "$@"; }
plot results/a3b-synthetic results/probe --card H100 -o plots/h100-a3b-synthetic.html
plot results/a3b-synthetic-2gpu --card H200 -o plots/h200x2-two-gpus.html \
    --title "2x H200: two-GPU layouts, synthetic Qwen3.6-35B-A3B"
plot results/active-contrast-synthetic results/probe --card H200 -o plots/h200-active-contrast.html \
    --title "H200: 35B-A3B vs 122B-A10B vs dense 27B (synthetic)"
plot results/methods-synthetic results/cost-model-synthetic results/dense27-synthetic results/a10b-synthetic \
    results/probe --card H200 \
    -o plots/h200-methods-synthetic.html \
    --title "H200, synthetic models: every method at synthetic acceptance (35B-A3B, 122B-A10B, dense 27B) and the cost model"
plot results/server-concurrency-synthetic --card H200 -o plots/h200-server-concurrency.html \
    --title "H200, synthetic 35B-A3B: in process and through llama-server, 1/4/8 streams"
plot results/placement-synthetic results/placement-synthetic/probe results/a10b-fit-synthetic results/a10b-mtp-layer-synthetic \
    results/a10b-fit-synthetic/probe results/a10b-synthetic/probe --card H200 \
    -o plots/h200-placement.html \
    --title "H200: where the weights live (quant-true 35B-A3B, experts of 20/40 layers on the host; 122B-A10B at 24/48 GiB fits)"
# the README's screenshot of a page's first screen, in the browser test's headless Chromium
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then
    python3 scripts/first-screen.py plots/h200-methods-synthetic.html docs/first-screen.png
else
    echo "no chromium: docs/first-screen.png left as it is" >&2
fi
