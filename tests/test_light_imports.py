"""Commands that only read records run without libllama: `plot`, `predict`, `analyze`, `contribute`
and `merge` in a Python where `import llama_cpp` fails (a contributor who draws or merges files
needs no compiled llama-cpp-python). `run` in the same Python fails at its import: the blocker works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# sys.modules[name] = None makes every `import llama_cpp` (and llama_cpp.*) raise ImportError
PRELUDE = ("import sys; sys.modules['llama_cpp'] = None; sys.argv[0] = 'specsweep'; "
           "from specsweep.cli import main; main()")


def specsweep_without_llama(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", PRELUDE, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("light")
    results = REPO / "results"
    got = {
        "plot": specsweep_without_llama(tmp, "plot", results / "a10b-synthetic", "-o", tmp / "page.html"),
        "analyze": specsweep_without_llama(tmp, "analyze", results / "a10b-synthetic", "--json", tmp / "a.json"),
        "predict": specsweep_without_llama(tmp, "predict", results / "probe", "--card", "H100", "--target", "35b-a3b",
                                           "--accept", "draft n4=0.8,0.6,0.4,0.2", "--boot", "0"),
        "contribute": specsweep_without_llama(tmp, "contribute", results / "a10b-synthetic", "-o", tmp / "c.json"),
    }
    got["merge"] = specsweep_without_llama(tmp, "merge", tmp / "c.json", "-o", tmp / "community.jsonl")
    got["run"] = specsweep_without_llama(tmp, "run", REPO / "matrices" / "smoke.toml", "--dry-run")
    got["tune --help"] = specsweep_without_llama(tmp, "tune", "--help")
    got["tmp"] = tmp
    return got


@pytest.mark.parametrize("command", ["plot", "predict", "analyze", "contribute", "merge", "tune --help"])
def test_a_command_that_reads_records_needs_no_libllama(runs, command):
    r = runs[command]
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "llama_cpp" not in r.stderr


def test_their_outputs_are_there(runs):
    tmp = runs["tmp"]
    assert (tmp / "page.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert json.loads((tmp / "a.json").read_text())["kind"] == "analysis"
    assert "break-even" in runs["predict"].stdout
    assert json.loads((tmp / "c.json").read_text())["trials"]
    assert "1 contributions (1 new)" in runs["merge"].stderr


def test_the_blocker_blocks(runs):
    """The negative control: `run` loads the engine, so the same Python cannot start it."""
    r = runs["run"]
    assert r.returncode != 0 and "llama_cpp" in r.stderr, r.stderr[-2000:]
