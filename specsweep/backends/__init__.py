"""Backends: what runs a cell's trials. A cell's `backend` key picks one.

- `inprocess` (backends/inprocess.py): specsweep's own engine through llama-cpp-python, the
  loop of `llama-speculative-simple` (or of a server slot, `loop = "server"`); its records break
  each trial's time into draft, verify, rollback and host.
- `server` (backends/server.py): llama.cpp's own `llama-server`, started per cell with the flags
  that match it (backends/server_flags.py), spoken to over HTTP; its records carry the server's
  own timings and counters. What a server user sees, with the server's per-token work included.

Both answer the same interface, so the runner (run/runner.py) orders, pairs and records trials
without knowing which one ran them:

    with backend.group(group, files) as prepare:   # what the cells of a group share (in process: the models)
        session = prepare(plan)                     # one cell, made ready to measure
        session.open()                              # contexts made / server started
        measured = session.measure(streams, seed)   # a trial (warm-ups too): a list of prompts, one per stream,
                                                    # and the trial's synthetic seed (None: the cell's root)
        session.close()

A trial with `parallel = N` runs N streams at once, each on its own prompt; a `Measured` holds
each stream's result and the wall-clock window in which they generated, from which the aggregate
tok/s comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from specsweep.engine.speculative import TrialResult
from specsweep.matrix.cells import Cell


@dataclass
class Measured:
    """One trial: each stream's result, in stream order, and what the backend adds."""
    streams: list[TrialResult]
    # parallel: seconds from the first stream's first generated token to the last stream's last
    window_s: float | None = None
    extra: dict = field(default_factory=dict)  # backend fields for the record (server timings, metrics)
    rollback: str | None = None  # how the target dropped rejected drafts, where the backend says
    split_times: bool = True  # the streams' draft/verify/rollback/host times are measured (in process)
    loop_times: TrialResult | None = None  # parallel in process: the shared loop's time breakdown

    @property
    def aggregate_tps(self) -> float | None:
        if self.window_s is None or self.window_s <= 0:
            return None
        return sum(len(s.tokens) for s in self.streams) / self.window_s


class Session(Protocol):
    """One cell made ready to measure."""
    cell: Cell
    prompts: dict[str, list[int]]  # prompt id -> the token ids every stream of that prompt is given
    exclusive: bool  # holds its devices alone while open (a server): opened around each run of its trials

    def open(self) -> None: ...
    def close(self) -> None: ...
    def measure(self, streams: list[str], seed: int | None = None) -> Measured: ...
    def plain(self, prompt_id: str) -> list[int] | None:
        """Plain greedy decoding of a prompt (the reference), or None when this session cannot."""


def stream_prompts(prompt_ids: list[str], first: str, parallel: int) -> list[str]:
    """The prompts of a trial's streams: the trial's own prompt, then the prompts after it in the
    set, cyclically. Every cell with the same `parallel` gives stream k of the trial on prompt p the
    same prompt, so trials pair across cells."""
    i = prompt_ids.index(first)
    return [prompt_ids[(i + k) % len(prompt_ids)] for k in range(parallel)]
