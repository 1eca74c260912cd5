"""Append-only JSONL files that survive being killed at any moment.

Each record is one line, written with a single `write` of the whole line and fsync'd before the
next trial starts, so a SIGKILL loses at most the trial in flight. A line cut short by a kill is
the only damage possible; it is cut off (and reported) the next time the file is opened for
appending, and skipped when read.

Layout of `results/<matrix name>/`:
- `trials.jsonl` (or `trials.shard-I-of-N.jsonl` under `--shard`): one record per measured trial;
- `references.jsonl`: the baseline tokens each speculative trial is checked against;
- `manifests.jsonl`: one line per `specsweep run` invocation (machine, versions, matrix hash);
- `failures.jsonl`: a cell whose llama-server failed, with the one-line cause (its trials stay to
  do: the next run retries it); `server-logs/<cell id>.log`: each server cell's llama-server log.
Resume reads every `trials*.jsonl`, so the shards of one matrix merge by living side by side.
A whole file written at once (a page, an analysis's JSON, a contribution) goes through
`write_atomically`: a kill leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from specsweep.errors import SpecsweepError


def _repair(path: Path) -> int:
    """Cut a last line left incomplete by a kill; returns the bytes dropped."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(size - 1, 0))
        if f.read(1) == b"\n":
            return 0
        # find the last newline, scanning back in chunks
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = pos - step + i + 1
                break
            pos -= step
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


class JsonlFile:
    def __init__(self, path: Path):
        self.path = path
        self._f = None
        self.repaired = 0

    def append(self, record: dict) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.repaired = _repair(self.path)
            self._f = open(self.path, "ab", buffering=0)
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        try:
            self._f.write(line)
            os.fsync(self._f.fileno())
        except OSError as e:
            raise SpecsweepError(f"cannot write {self.path}: {e.strerror}") from None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SpecsweepError(f"cannot write {path}: {e.strerror or e}") from None


def read_jsonl(path: Path) -> list[dict]:
    """Every complete, well-formed line; a torn or garbled line is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return parse_jsonl(data)


def parse_jsonl(data: bytes) -> list[dict]:
    """The records of a JSON Lines file's bytes: every complete, well-formed line."""
    records = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


class ResultsDir:
    def __init__(self, root: Path, matrix_name: str, shard: tuple[int, int] | None = None):
        self.dir = Path(root) / matrix_name
        suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard and shard[1] > 1 else ""
        self.trials = JsonlFile(self.dir / f"trials{suffix}.jsonl")
        self.references = JsonlFile(self.dir / f"references{suffix}.jsonl")
        self.manifests = JsonlFile(self.dir / "manifests.jsonl")
        self.failures = JsonlFile(self.dir / "failures.jsonl")

    def read_trials(self) -> list[dict]:
        return [r for p in sorted(self.dir.glob("trials*.jsonl")) for r in read_jsonl(p)]

    def read_references(self) -> list[dict]:
        return [r for p in sorted(self.dir.glob("references*.jsonl")) for r in read_jsonl(p)]

    def close(self) -> None:
        for f in (self.trials, self.references, self.manifests, self.failures):
            f.close()
