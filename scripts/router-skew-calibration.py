#!/usr/bin/env python3
"""How `synth --router-skew SIGMA` spreads routings over experts, against published measurements of
trained routers: the calibration behind the levels docs/models.md names ("Routing").

A stand-in's router reads a hidden state dominated by the token's embedding: for distinct tokens,
independent Gaussian vectors. This draws such vectors, routes them through a router made as the
writer makes it (Gaussian rows, then `fill.skew_router`, the very function `synth` uses) and reports
per level, for 128 and 256 experts top-8:
- experts that take 90% of the routings (as a share of E), the busiest expert's share, and the
  concentration 1 - H / ln E (H the entropy of the load);
- U(4): the distinct experts of 4 independent tokens, against the i.i.d. formula's.
Published figures it is set against (docs/models.md cites them):
- Qwen3-30B-A3B (128 experts, top-8), llama-imatrix counts over ~1k tokens of mixed prose, code and
  maths: 65 of 128 experts (51%) take 90% of the routings, concentration 0.111, busiest expert 4.3%;
- Cohere's 128-expert top-8 model (April 2026 blog post): a 4-token verify would read 25.4 experts if
  tokens routed independently with the measured expert popularity (29.1 uniform): 0.873 of i.i.d.
Deterministic (fixed seeds); about ten seconds.
"""

from __future__ import annotations

import numpy as np

from specsweep.synth.fill import skew_router

TOKENS, DIM, LAYERS = 4096, 256, 6  # a router's logits are Gaussian whatever the width; 6 layers' worth
SIGMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
PUBLISHED = {"experts for 90% (Qwen3-30B-A3B)": 65 / 128, "concentration (Qwen3-30B-A3B)": 0.111,
             "busiest (Qwen3-30B-A3B)": 0.043, "U(4) / i.i.d. (Cohere, popularity only)": 25.4 / 29.1}


def level(sigma: float, n_expert: int, k: int = 8) -> dict:
    n90, conc, top, u4 = [], [], [], []
    for layer in range(LAYERS):
        rng = np.random.default_rng(1000 * layer + n_expert)
        router = skew_router((rng.standard_normal((n_expert, DIM)) / np.sqrt(DIM)).astype(np.float32), sigma, layer)
        x = rng.standard_normal((TOKENS, DIM)).astype(np.float32)
        chosen = np.argpartition(-(x @ router.T), k, axis=1)[:, :k]
        counts = np.sort(np.bincount(chosen.ravel(), minlength=n_expert))[::-1]
        p = counts / counts.sum()
        n90.append((int(np.searchsorted(np.cumsum(p), 0.9)) + 1) / n_expert)
        nz = p[p > 0]
        conc.append(1 + float(np.sum(nz * np.log(nz))) / np.log(n_expert))
        top.append(float(p[0]))
        u4 += [len(np.unique(chosen[i:i + 4])) for i in range(0, TOKENS, 4)]
    iid4 = n_expert * (1 - (1 - k / n_expert) ** 4)
    return {"n90": np.mean(n90), "conc": np.mean(conc), "top": np.mean(top), "u4": np.mean(u4) / iid4}


def main() -> None:
    print("published: " + "; ".join(f"{k} {v:.3f}" for k, v in PUBLISHED.items()))
    print(f"{'sigma':>5} {'E':>4} {'experts for 90%':>16} {'concentration':>14} {'busiest':>8} {'U(4)/i.i.d.':>12}")
    for sigma in SIGMAS:
        for e in (128, 256):
            r = level(sigma, e)
            print(f"{sigma:>5} {e:>4} {r['n90']:>16.3f} {r['conc']:>14.3f} {r['top']:>8.3f} {r['u4']:>12.3f}")


if __name__ == "__main__":
    main()
