"""A tune's progress, in <out>/tune.json: what it was asked (its inputs), which stages are done, the
ranking, and the race (its entrants, the ones dropped and when, the blocks asked for). Measurements
live in the records; this file holds the decisions, so that the same command run again resumes
with the same ranking and the same race, and a command with other inputs does not mix into it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.records.store import write_atomically

FILE = "tune.json"


@dataclass
class State:
    inputs: dict
    probed: bool = False
    piloted: bool = False
    ranking: list[dict] = field(default_factory=list)  # {"name", "predicted", "acceptance", "note"}, best first
    entrants: list[str] = field(default_factory=list)  # candidate names in the race, in ranking order
    dropped: dict[str, dict] = field(default_factory=dict)  # name -> {"after_blocks", "reason"}
    blocks: int = 0  # blocks the race matrix asks for
    measured: int = 0  # blocks of it measured (a round that was cut short: fewer than asked)
    rounds: list[dict] = field(default_factory=list)  # {"blocks", "cells", "seconds"}
    stopped: str = ""  # why the race ended ("" while it goes on)

    @property
    def alive(self) -> list[str]:
        return [n for n in self.entrants if n not in self.dropped]

    def save(self, out: Path) -> None:
        write_atomically(Path(out) / FILE, json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")


def open_state(out: Path, inputs: dict) -> State:
    """The folder's state, or a new one; a folder holding a tune of other inputs is one line."""
    path = Path(out) / FILE
    if not path.is_file():
        Path(out).mkdir(parents=True, exist_ok=True)
        state = State(inputs)
        state.save(out)
        return state
    try:
        data = json.loads(path.read_text())
        state = State(**data)
    except (ValueError, TypeError) as e:
        raise SpecsweepError(f"{path}: not a tune's state ({e}); give another -o") from None
    if state.inputs != inputs:
        diff = sorted(k for k in set(inputs) | set(state.inputs) if inputs.get(k) != state.inputs.get(k))
        raise SpecsweepError(f"{out} holds a tune of other inputs ({', '.join(diff)} differ): give another -o, "
                             f"or the same inputs to resume it")
    return state
