"""The native-comparison runners run on the CPU with tiny synthetic models (benchmarks/native_ratios.py,
benchmarks/baseline_vs_native.py): every round's counts match the native tool's, and the table has a
row per method and loop. Speed is not checked here (two shared cores); the GPU run is the device
script's (benchmarks/device/native_ratios.sh). Skipped without the native tools, as the parity tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from specsweep.models.fit import native_bin

ROOT = Path(__file__).resolve().parent.parent
NATIVE = native_bin()
NEEDED = ("llama-speculative-simple", "llama-server")

if not all((NATIVE / t).is_file() for t in NEEDED):
    if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
        pytest.fail(f"native tools missing in {NATIVE}: run scripts/build-native.sh", pytrace=False)
    pytest.skip(f"native tools not built ({NATIVE}); run scripts/build-native.sh", allow_module_level=True)


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_loop_against_its_native_tool_with_counts_checked(tmp_path, tiny_model):
    target = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05, mtp=True)
    out = tmp_path / "ratios.md"
    rows = script("native_ratios").main(
        ["--target", str(target), "--tools", str(NATIVE), "--methods", "mtp", "ngram-simple", "dflash",
         "--n", "16", "--rounds", "1", "--threads", "2", "--kv", "f16", "--out", str(out)])
    assert [(r.method, r.loop) for r in rows] == [("mtp", "simple"), ("mtp", "server"),
                                                  ("ngram-simple", "simple"), ("ngram-simple", "server")]
    assert all(r.same for r in rows), [(r.method, r.loop, r.counts) for r in rows]
    assert rows[1].counts[1] > 0  # MTP drafted through the server loop
    table = out.read_text()
    assert "| mtp | server | llama-server |" in table and "dflash (no --dflash)" in table


def test_plain_decoding_beside_the_native_loops(tmp_path, tiny_model):
    target = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05, mtp=True)
    table = script("baseline_vs_native").main([str(target), "--tools", str(NATIVE), "--n", "8", "--rounds", "1",
                                               "--threads", "2"])
    assert "| in process, server loop |" in table and "| llama-server |" in table
    assert "/ fastest native" in table and "host time per generated token" in table
