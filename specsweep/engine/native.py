"""llama.cpp's own tools (`llama-speculative-simple`, `llama-bench`) run on the engine's libraries,
for the parity test and the in-process-against-native benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll

_STATS = re.compile(rb"(n_predict|n_drafted|n_accept)\s+=\s+(\d+)")
_SPEED = re.compile(rb"decoded\s+\d+ tokens in\s+[\d.]+ seconds, speed:\s+([\d.]+) t/s")


def lib_dir() -> Path:
    """The folder libllama/libggml are loaded from (llama-cpp-python's rule: $LLAMA_CPP_LIB_PATH,
    else the wheel's own lib/). Native llama.cpp tools run with it first on LD_LIBRARY_PATH share
    every kernel with the in-process engine."""
    return Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(ll.__file__).parent / "lib")


def native_env(tool: Path) -> dict[str, str]:
    """The environment to run a native llama.cpp tool on the engine's own libraries."""
    return dict(os.environ, LD_LIBRARY_PATH=f"{lib_dir()}:{Path(tool).parent}")


@dataclass(frozen=True)
class SpeculativeRun:
    stdout: bytes  # the prompt and the generated text, as llama.cpp printed them
    stats: dict[str, int]  # n_predict, n_drafted, n_accept (llama.cpp's counters)
    decode_tps: float


def run_speculative_simple(cmd: list[str], tries: int = 5) -> SpeculativeRun:
    """Run `llama-speculative-simple` (cmd[0]) and read its statistics.

    llama.cpp's logger is asynchronous and deliberately never flushed at exit (upstream issue
    22142), so the last lines are now and then lost. Its queue is in order: a run whose final
    statistics arrived also printed all of its text. Such a run is waited for, up to `tries`."""
    for _ in range(tries):
        proc = subprocess.run(cmd, capture_output=True, env=native_env(Path(cmd[0])), timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode(errors="replace")[-2000:])
        stats = {k.decode(): int(v) for k, v in _STATS.findall(proc.stderr)}
        speed = _SPEED.search(proc.stderr)
        if len(stats) == 3 and speed:
            return SpeculativeRun(proc.stdout, stats, float(speed.group(1)))
    raise RuntimeError(f"llama-speculative-simple lost its final log lines {tries} times in a row")
