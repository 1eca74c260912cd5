"""Which trial records count, with every newer field optional.

Older records have no `run`, `block` or `attempt`: they are one run (0), and each trial index is
its own block. A block re-run after an interruption leaves several attempts of one (run, block,
cell, prompt): only the highest counts.
"""

from __future__ import annotations

from collections import defaultdict


def run_of(r: dict) -> int:
    return int(r.get("run") or 0)


def block_of(r: dict) -> int:
    b = r.get("block")
    return int(r.get("trial") or 0) if b is None else int(b)


def kept(trials: list[dict]) -> list[dict]:
    """The trials that count: of the attempts at one (run, block, cell, prompt), the highest."""
    keyed = [((run_of(r), block_of(r), r.get("cell_id"), r.get("prompt_id")), int(r.get("attempt") or 0), r)
             for r in trials]
    best: dict[tuple, int] = defaultdict(int)
    for key, attempt, _ in keyed:
        best[key] = max(best[key], attempt)
    return [r for key, attempt, r in keyed if attempt == best[key]]
