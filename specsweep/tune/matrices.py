"""The matrices a tune measures with: ordinary TOML files beside its records, run by `specsweep
run`'s machinery, so their records resume, pair and draw as any matrix's.

- pilot.toml: plain decoding and each family's pilot, one block, one stream;
- race.toml: plain decoding and the configs still racing, blocks growing two at a round, at the
  user's number of streams (rewritten each round: a cell's id is a hash of its settings, so the
  blocks already measured stay its own and resume skips them);
- finalists.toml: the race's last configs and plain decoding, for a fresh run
  (`specsweep run results/tune-NAME/finalists.toml`);
- grid.toml: every candidate, what tuning spares (the device demo times it against the tune).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from specsweep.matrix.written import settings_lines
from specsweep.tune.candidates import Candidate


@dataclass(frozen=True)
class Setup:
    """What every cell of a tune shares: the [models] and [defaults] of its matrices."""
    models: dict[str, Path]
    gpus: tuple[int, ...]
    prompts: str
    kv: str = "q8_0"
    n_ctx: int = 4096
    n_predict: int = 256
    warmup: int = 1
    threads: int = 0
    n_cpu_moe: int | None = None

    def defaults(self, parallel: int) -> dict:
        d = {"target": "target", "gpus": list(self.gpus), "kv": self.kv, "n_ctx": self.n_ctx,
             "n_predict": self.n_predict, "warmup": self.warmup, "threads": self.threads, "prompts": self.prompts,
             # llama-server's slot loop in process: the loop of the command line tune prints
             "loop": "server", "parallel": parallel}
        if self.n_cpu_moe:
            d["n_cpu_moe"] = self.n_cpu_moe
        return d


def text(name: str, description: str, setup: Setup, cells: list[Candidate], parallel: int,
         blocks: int) -> str:
    lines = [f'name = "{name}"', f"description = {json.dumps(description)}", 'design = "blocks"',
             f"blocks = {blocks}", "", "[models]"]
    lines += [f"{role} = {{ path = {json.dumps(str(Path(p).resolve()))} }}" for role, p in setup.models.items()]
    lines += ["", "[defaults]", *settings_lines(setup.defaults(parallel))]
    lines += ["", "[[cell]]", 'name = "plain decoding"', 'method = "baseline"']
    for c in cells:
        lines += ["", "[[cell]]", f"name = {json.dumps(c.name)}", *settings_lines(c.settings)]
    return "\n".join(lines) + "\n"
