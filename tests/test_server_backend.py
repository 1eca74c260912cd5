"""`backend = "server"`: the smoke cells through llama.cpp's own llama-server, against the in-process
engine running a server slot's loop; `parallel = 2` both ways; and the ways a server fails.

On the CPU, decoding is deterministic and the server is built from the same vendored source as the
wheel (scripts/build-native.sh): the same tokens and the same drafted and accepted counts are the
check that the server backend runs the cell the in-process engine runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specsweep.backends import server as server_backend
from specsweep.backends.server_flags import merged_overrides
from specsweep.engine.llama_server import LlamaServer, find_binary
from specsweep.errors import SpecsweepError
from specsweep.records.store import read_jsonl
from specsweep.models.fit import native_bin
from tests.conftest import run_cli as run

ROOT = Path(__file__).resolve().parent.parent
NATIVE = native_bin()
SERVER = NATIVE / "llama-server"

if not SERVER.is_file():
    if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
        pytest.fail(f"{SERVER} is missing: run scripts/build-native.sh", pytrace=False)
    pytest.skip(f"native llama-server not built ({SERVER}); run scripts/build-native.sh", allow_module_level=True)

HEAD = """
name = "srv"
design = "sequential"
[models]
target    = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
identical = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
unrelated = { synth = "qwen3.5-0.8b", scale = "tiny", seed = 7 }
[defaults]
target = "target"
gpus = []
threads = 2
n_ctx = 512
n_predict = 24
trials = 1
warmup = 0
prompt_kinds = ["chat", "code"]
"""

# the smoke matrix's baseline, draft and ngram-mod cells; in process through a server slot's loop
CELLS = """
[[cell]]
method = "baseline"
backend = ["inprocess", "server"]
loop = "server"
PARALLEL
[[cell]]
name = "draft {draft} {backend}"
method = "draft"
draft = ["identical", "unrelated"]
draft_max = 4
backend = ["inprocess", "server"]
loop = "server"
PARALLEL
[[cell]]
method = "ngram-mod"
n_match = 1
draft_min = 1
draft_max = 8
backend = ["inprocess", "server"]
loop = "server"
PARALLEL
"""


SERVER_BASELINE_AND_DRAFT = """
[[cell]]
method = "baseline"
backend = "server"
[[cell]]
method = "draft"
draft = "identical"
draft_max = 4
backend = "server"
"""


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory):
    old = {k: os.environ.get(k) for k in ("SPECSWEEP_CACHE", "SPECSWEEP_LLAMA_SERVER")}
    os.environ["SPECSWEEP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["SPECSWEEP_LLAMA_SERVER"] = str(SERVER)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def write(tmp_path: Path, body: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + body)
    return path


def strip(counts: list[int]) -> list[int]:
    while counts and counts[-1] == 0:
        counts = counts[:-1]
    return counts


def by_backend(records: list[dict]) -> dict[tuple, dict]:
    """(cell name without the backend, prompt) -> {backend: record}."""
    out: dict[tuple, dict] = {}
    for r in records:
        name = r["cell"].replace(" [server]", "").replace(" server", "").replace(" inprocess", "")
        out.setdefault((name, r["prompt_id"]), {})[r["backend"]] = r
    return out


@pytest.mark.parametrize("parallel", [1, 2])
def test_server_backend_runs_the_cells_the_engine_runs(tmp_path, parallel):
    results = tmp_path / "results"
    body = CELLS.replace("PARALLEL", f"parallel = {parallel}")
    out = run(write(tmp_path, body), "--results", results)
    assert out.exit_code == 0, out.output
    records = read_jsonl(results / "srv" / "trials.jsonl")
    assert len(records) == 4 * 2 * 2  # 4 cells x 2 backends x 2 prompts
    pairs = by_backend(records)
    drafted = 0
    for (name, prompt), both in pairs.items():
        mine, theirs = both["inprocess"], both["server"]
        assert theirs["loop"] == "llama-server" and mine["loop"] == "server"
        assert theirs["tokens_sha"] == mine["tokens_sha"], name
        assert (theirs["n_drafted"], theirs["n_accepted"]) == (mine["n_drafted"], mine["n_accepted"]), name
        assert theirs["lossless"] and mine["lossless"]
        assert theirs["time_s"]["verify"] is None and theirs["decode_tps"] > 0
        assert sorted(theirs["server"]["id_slot"]) == list(range(parallel))  # which slot ran each stream
        assert theirs["server"].get("prefill_batches", 1) == 1
        if parallel > 1:
            assert [s["tokens_sha"] for s in theirs["streams"]] == [s["tokens_sha"] for s in mine["streams"]]
            assert [s["prompt_id"] for s in theirs["streams"]][0] == prompt and len(theirs["streams"]) == 2
            assert [(s["n_drafted"], s["n_accepted"]) for s in theirs["streams"]] == \
                   [(s["n_drafted"], s["n_accepted"]) for s in mine["streams"]]
        else:
            # the server's counter has a place per position up to n_max, accepted there or not
            assert strip(theirs["accepted_by_pos"]) == strip(mine["accepted_by_pos"])
        drafted += theirs["n_drafted"]
    assert drafted > 0
    # one log per server cell beside the records, and the page's pairing: server cells against the
    # server baseline (their own reference key)
    logs = list((results / "srv" / "server-logs").glob("*.log"))
    assert len(logs) == 4 and all("--spec-type" in p.read_text() or "baseline" for p in logs)
    keys = {r["backend"]: r["reference_key"] for r in records if r["method"] == "baseline"}
    assert keys["server"] != keys["inprocess"]


def test_mtp_streams_in_process_match_the_servers_slots(tmp_path):
    """Two MTP streams: the head reads each stream's rows of the joint verify batch, in its own
    sequence; greedy and at synthetic acceptance (each slot seeded alike, as the server does)."""
    results = tmp_path / "results"
    body = """
[[cell]]
method = "baseline"
backend = ["inprocess", "server"]
parallel = 2
[[cell]]
method = "mtp"
draft_max = 3
backend = ["inprocess", "server"]
parallel = 2
[[cell]]
name = "mtp L={synth_len}"
method = "mtp"
draft_max = 3
synth_len = 2.0
backend = ["inprocess", "server"]
parallel = 2
"""
    path = write(tmp_path, body)
    path.write_text(path.read_text().replace('target    = { synth = "qwen3.6-35b-a3b", scale = "tiny" }',
                                             'target    = { synth = "qwen3.6-35b-a3b", scale = "tiny", '
                                             'branch_scale = 0.05, mtp = true }'))
    out = run(path, "--results", results)
    assert out.exit_code == 0, out.output
    records = read_jsonl(results / "srv" / "trials.jsonl")
    pairs = by_backend(records)
    assert len(pairs) == 3 * 2
    for (name, _), both in pairs.items():
        mine, theirs = both["inprocess"], both["server"]
        assert [(s["tokens_sha"], s["n_drafted"], s["n_accepted"]) for s in mine["streams"]] == \
               [(s["tokens_sha"], s["n_drafted"], s["n_accepted"]) for s in theirs["streams"]], name
        assert mine.get("synth_seed") == theirs.get("synth_seed")  # one config, one seed per trial, both ways
    assert sum(r["n_accepted"] for r in records if r["method"] == "mtp") > 0
    assert len({r["synth_seed"] for r in records if r.get("synthetic")}) == 2  # a seed per prompt, not one


def test_drafters_that_read_the_target_run_streams_as_the_servers_slots(tmp_path):
    """DFlash, DSpark and EAGLE-3 at two streams, greedy and at synthetic acceptance: each stream reads
    its rows of the joint verify batch, the streams draft together and EAGLE-3 encodes all streams'
    features of a verify batch in one batch, as llama.cpp does. Counts agree everywhere and tokens
    too, except EAGLE-3's synthetic text: the server prefills both prompts in one batch and encodes
    their features together, specsweep prefills stream after stream, and at synthetic acceptance
    the drafts are the text, so a near-tie rounded apart in the encoder shows."""
    results = tmp_path / "results"
    body = '[[cell]]\nmethod = "baseline"\nbackend = ["inprocess", "server"]\nparallel = 2\n'
    for m in ("dflash", "dspark", "eagle3"):
        body += (f'[[cell]]\nname = "{m} L={{synth_len}}"\nmethod = "{m}"\ndrafter = "{m}"\ndraft_max = 4\n'
                 f'synth_len = 2.0\nbackend = ["inprocess", "server"]\nparallel = 2\n'
                 f'[[cell]]\nmethod = "{m}"\ndrafter = "{m}"\ndraft_max = 4\n'
                 f'backend = ["inprocess", "server"]\nparallel = 2\n')
    path = write(tmp_path, body)
    head = path.read_text().replace(
        'target    = { synth = "qwen3.6-35b-a3b", scale = "tiny" }',
        'target    = { synth = "qwen3.6-35b-a3b", scale = "tiny", branch_scale = 0.05 }\n'
        + "".join(f'{m} = {{ synth = "qwen3.6-35b-a3b-{m}", scale = "tiny", branch_scale = 0.05 }}\n'
                  for m in ("dflash", "dspark", "eagle3")))
    path.write_text(head)
    out = run(path, "--results", results)
    assert out.exit_code == 0, out.output
    pairs = by_backend(read_jsonl(results / "srv" / "trials.jsonl"))
    assert len(pairs) == 7 * 2
    for (name, _), both in pairs.items():
        mine, theirs = both["inprocess"]["streams"], both["server"]["streams"]
        assert [(s["n_drafted"], s["n_accepted"]) for s in mine] == [(s["n_drafted"], s["n_accepted"]) for s in theirs]
        if not name.startswith("eagle3 L="):
            assert [s["tokens_sha"] for s in mine] == [s["tokens_sha"] for s in theirs], name


def test_blocks_design_through_the_server_starts_each_cell_once_per_block(tmp_path):
    results = tmp_path / "results"
    path = write(tmp_path, SERVER_BASELINE_AND_DRAFT)
    path.write_text(path.read_text().replace('design = "sequential"', 'design = "blocks"\nblocks = 2'))
    out = run(path, "--results", results)
    assert out.exit_code == 0, out.output
    records = read_jsonl(results / "srv" / "trials.jsonl")
    assert len(records) == 2 * 2 * 2 and {r["block"] for r in records} == {0, 1}
    starts = sum(p.read_text().count("$ ") for p in (results / "srv" / "server-logs").glob("*.log"))
    assert starts == 2 * 2 + 1  # 2 cells x 2 blocks, and the baseline's reference pass before the blocks
    assert all(r["lossless"] for r in records)


def test_sequential_design_through_the_server_starts_each_cell_once(tmp_path):
    """The baseline runs first: its own first trials are the references, no extra start for them."""
    results = tmp_path / "results"
    out = run(write(tmp_path, SERVER_BASELINE_AND_DRAFT), "--results", results)
    assert out.exit_code == 0, out.output
    records = read_jsonl(results / "srv" / "trials.jsonl")
    starts = sum(p.read_text().count("$ ") for p in (results / "srv" / "server-logs").glob("*.log"))
    assert starts == 2 and len(records) == 2 * 2
    assert all(r["lossless"] for r in records) and {r["prompt_id"] for r in records if r["method"] == "draft"} \
        == {r["prompt_id"] for r in read_jsonl(results / "srv" / "references.jsonl")}


def test_a_missing_binary_is_one_line_before_any_trial(tmp_path):
    results = tmp_path / "results"
    out = run(write(tmp_path, '[[cell]]\nmethod = "baseline"\nbackend = "server"\n'), "--results", results,
              "--llama-server", tmp_path / "nope" / "llama-server")
    assert out.exit_code == 2 and out.output.strip().count("\n") == 0
    assert "llama-server not found" in out.output and not (results / "srv" / "trials.jsonl").exists()


def test_a_taken_port_is_one_line_naming_the_log(tmp_path, tiny_model):
    target = tiny_model("qwen3.6-35b-a3b")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        server = LlamaServer(find_binary(SERVER), ["-m", str(target), "-c", "256", "-ngl", "0", "--fit", "off"],
                             tmp_path / "server.log", port=port)
        with pytest.raises(SpecsweepError) as e:
            server.start(timeout=60)
    assert "\n" not in e.value.message and str(tmp_path / "server.log") in e.value.message
    assert "exited" in e.value.message


def test_an_http_error_is_one_line(tmp_path, tiny_model):
    target = tiny_model("qwen3.6-35b-a3b")
    with LlamaServer(SERVER, ["-m", str(target), "-c", "256", "-ngl", "0", "--fit", "off", "-t", "2"],
                     tmp_path / "server.log") as server:
        with pytest.raises(SpecsweepError) as e:
            server.complete([1, 2, 3], 8, seed=1, n_probs="many")  # a field of the wrong type
    assert "HTTP 400" in e.value.message and "\n" not in e.value.message


def test_a_server_killed_mid_trial_fails_its_cell_and_the_run_goes_on(tmp_path, monkeypatch):
    """The draft cell's server dies during its first request: that cell is marked failed (one line
    naming the log), the other cells are recorded, the exit code says so, and the next run retries
    only the failed cell."""
    results = tmp_path / "results"
    body = SERVER_BASELINE_AND_DRAFT + """
[[cell]]
method = "ngram-mod"
n_match = 1
draft_min = 1
draft_max = 8
backend = "server"
"""
    real = LlamaServer.complete

    def dies(self, tokens, *a, **k):
        if "-md" in self.args:  # the draft cell's server
            self.proc.kill()
            self.proc.wait()
        return real(self, tokens, *a, **k)

    monkeypatch.setattr(LlamaServer, "complete", dies)
    path = write(tmp_path, body)
    out = run(path, "--results", results)
    assert out.exit_code == 1, out.output
    assert "failed: llama-server died during /completion" in out.output and ".log" in out.output
    records = read_jsonl(results / "srv" / "trials.jsonl")
    assert {r["method"] for r in records} == {"baseline", "ngram-mod"} and len(records) == 4
    (failure,) = read_jsonl(results / "srv" / "failures.jsonl")
    assert failure["cell"].startswith("draft") and "died" in failure["error"]
    monkeypatch.setattr(LlamaServer, "complete", real)
    again = run(path, "--results", results)
    assert again.exit_code == 0, again.output
    records = read_jsonl(results / "srv" / "trials.jsonl")
    assert len(records) == 6 and sum(r["method"] == "draft" for r in records) == 2


def _processes_with(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def test_a_terminated_run_stops_its_server_and_resumes(tmp_path):
    """`timeout` and schedulers stop a run with SIGTERM: the server (in its own session) must not be
    left holding the GPU, and the records written so far stay."""
    results = tmp_path / "results"
    path = write(tmp_path, '[[cell]]\nmethod = "baseline"\nbackend = "server"\ntrials = 400\n')
    proc = subprocess.Popen([sys.executable, "-m", "specsweep", "run", str(path), "--results", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    trials = results / "srv" / "trials.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (trials.exists() and trials.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    (log,) = (results / "srv" / "server-logs").glob("*.log")
    port = log.read_text().splitlines()[0].split("--port ")[1].split()[0]
    assert _processes_with(f"--port {port}"), "the server should be running mid-cell"
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130 and "interrupted" in output and "Traceback" not in output
    assert not _processes_with(f"--port {port}")
    kept = len(read_jsonl(trials))
    assert kept >= 2
    again = run(write(tmp_path, '[[cell]]\nmethod = "baseline"\nbackend = "server"\ntrials = 400\n'),
                "--results", results, "--dry-run")
    assert f"{800 - kept}/800 trials to run" in again.output


def test_bad_server_cells_are_one_line_at_load(tmp_path):
    results = tmp_path / "results"
    prior = '[[cell]]\nmethod = "ngram-cache"\nlookup_prior_runs = 2\nbackend = "server"\n'
    out = run(write(tmp_path, prior), "--results", results)
    assert out.exit_code == 2 and "lookup_prior_runs cannot run through llama-server" in out.output
    # drafters that read the target run several streams in process too: the cell loads and fails
    # on the model, not on the backend
    dflash = '[[cell]]\nmethod = "dflash"\ndrafter = "identical"\nparallel = 2\n'
    out = run(write(tmp_path, dflash), "--results", results)
    assert out.exit_code == 2 and "is not a DFlash drafter" in out.output and "backend" not in out.output
    wide = '[[cell]]\nmethod = "ngram-mod"\nparallel = 16\nn_batch = 512\n'
    out = run(write(tmp_path, wide), "--results", results)
    assert out.exit_code == 2 and "do not fit one decode" in out.output


def test_one_override_list_for_both_of_the_servers_models():
    assert merged_overrides(("a=int:1",), ("b=int:2", "a=int:1"), "c") == ["a=int:1", "b=int:2"]
    with pytest.raises(SpecsweepError, match="sets a differently|set a differently"):
        merged_overrides(("a=int:1",), ("a=int:2",), "c")


def test_metrics_are_read_per_trial():
    before = server_backend.parse_metrics('llamacpp:spec_decode_num_drafts_total 3\n'
                                          'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 2\n')
    after = server_backend.parse_metrics('llamacpp:spec_decode_num_drafts_total 7\n'
                                         'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 5\n'
                                         'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="1"} 1\n')
    delta = server_backend.metrics_delta(before, after)
    assert delta["spec_decode_num_drafts_total"] == 4 and delta["accepted_per_pos"] == [3, 1]


def test_a_baseline_makes_the_references_only_for_prompts_it_still_runs():
    """The sequential shortcut holds only when the baseline's remaining trials cover every prompt
    without a reference, and it runs before the speculative cells of its key."""
    from types import SimpleNamespace as NS

    from specsweep.run.runner import Runner

    def plan(method: str, prompts: list[str]):
        cell = NS(method=method, settings={}, reference_key=lambda: "k")
        return NS(cell=cell, todo=[(NS(id=p), 0) for p in prompts])

    base, spec = plan("baseline", ["a", "b"]), plan("draft", ["a", "b", "c"])
    group = NS(design="sequential", live=[base, spec])
    assert Runner._makes_its_own_references(group, base, ["a", "b"])
    assert not Runner._makes_its_own_references(group, base, ["b", "c"])  # c: no baseline trial left
    assert not Runner._makes_its_own_references(NS(design="sequential", live=[spec, base]), base, ["a"])
    assert not Runner._makes_its_own_references(NS(design="blocks", live=[base, spec]), base, ["a"])
