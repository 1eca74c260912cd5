"""Prompt sets beyond the shipped TOML: Spec-Bench's question format (`spec-bench:PATH`, `*.jsonl`),
`?per_kind=N`, kinds and groups, stable ids, `hf://datasets/...` through a Hugging Face cache built
in the standard layout (offline), and `specsweep run` end to end on a Spec-Bench file.

No third-party text: every file here is written by the test, in the formats' own shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from huggingface_hub import constants

from specsweep.cli import main
from specsweep.errors import SpecsweepError
from specsweep.matrix.prompts import load_set
from specsweep.records.store import read_jsonl

# Spec-Bench's shape: question_id, category, turns (MT-bench questions have two), sometimes reference
QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write two sentences about a lighthouse.",
                                                         "Rewrite your previous response in one sentence."]},
    {"question_id": 82, "category": "writing", "turns": ["Write a short note to a neighbour."]},
    {"question_id": 121, "category": "coding", "turns": ["for i in range(3): x = x + y[i]\n"
                                                         "for i in range(3): x = x + y[i]\nContinue the pattern."]},
    {"question_id": 201, "category": "translation", "turns": ["Translate to French: good morning"],
     "reference": ["bonjour"]},
    {"question_id": 202, "category": "translation", "turns": ["Translate to French: thank you"]},
    {"question_id": 900, "category": "my_new_label", "turns": ["Name three colours."]},
]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def bench(tmp_path) -> Path:
    """A matrix path (not written: load_set only needs its folder) with data/question.jsonl beside it."""
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "question.jsonl", QUESTIONS)
    return tmp_path / "m.toml"


def test_spec_bench_questions_become_prompts_of_their_category_and_group(bench):
    prompts = load_set("spec-bench:data/question.jsonl", bench)
    assert [p.name for p in prompts] == ["writing-81", "writing-82", "coding-121", "translation-201",
                                         "translation-202", "my_new_label-900"]
    assert [p.kind for p in prompts] == ["writing", "writing", "coding", "translation", "translation", "my_new_label"]
    assert [p.group for p in prompts] == ["mt-bench", "mt-bench", "mt-bench", "translation", "translation",
                                          "my_new_label"]
    assert prompts[0].text == "Write two sentences about a lighthouse."  # the first turn only
    # the id scheme of TOML sets: set (the string without options) / name @ text hash
    text_hash = hashlib.sha256(prompts[0].text.encode()).hexdigest()[:8]
    assert prompts[0].id == f"spec-bench:data/question.jsonl/writing-81@{text_hash}"


def test_prompt_kinds_select_by_category_or_group(bench):
    def ids(kinds):
        return [p.name for p in load_set("spec-bench:data/question.jsonl", bench, kinds)]

    assert ids(["mt-bench"]) == ["writing-81", "writing-82", "coding-121"]
    assert ids(["coding", "translation"]) == ["coding-121", "translation-201", "translation-202"]
    with pytest.raises(SpecsweepError, match="no prompt of kind or group 'rag'"):
        load_set("spec-bench:data/question.jsonl", bench, ["rag"])


def test_per_kind_takes_the_first_n_of_each_kind_and_keeps_their_ids(bench):
    every = {p.name: p.id for p in load_set("spec-bench:data/question.jsonl", bench)}
    one = load_set("spec-bench:data/question.jsonl?per_kind=1", bench)
    assert [p.name for p in one] == ["writing-81", "coding-121", "translation-201", "my_new_label-900"]
    assert all(p.id == every[p.name] for p in one)  # raising per_kind later keeps the measured prompts' ids
    assert [p.name for p in load_set("spec-bench:data/question.jsonl?per_kind=1", bench, ["mt-bench"])] == \
        ["writing-81", "coding-121"]


def test_ids_are_stable_and_follow_the_text(bench, tmp_path):
    before = {p.name: p.id for p in load_set("spec-bench:data/question.jsonl", bench)}
    edited = [dict(q) for q in QUESTIONS]
    edited[1]["turns"] = ["Write a short note to a colleague."]
    edited.insert(0, {"question_id": 1, "category": "qa", "turns": ["Who wrote Hamlet?"]})
    write_jsonl(tmp_path / "data" / "question.jsonl", edited)
    after = {p.name: p.id for p in load_set("spec-bench:data/question.jsonl", bench)}
    assert after["writing-82"] != before["writing-82"]  # its text changed
    assert all(after[n] == before[n] for n in before if n != "writing-82")  # a new line moves nothing else


def test_plain_jsonl_lines_with_prompt_or_text(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi."}, {"id": "x", "kind": "chat", "text": "Say bye."}])
    prompts = load_set("p.jsonl", tmp_path / "m.toml")
    assert [(p.name, p.kind, p.group, p.text) for p in prompts] == [("prompt-1", "prompt", "prompt", "Say hi."),
                                                                     ("chat-x", "chat", "chat", "Say bye.")]


def test_toml_sets_keep_their_ids_and_gain_group_and_per_kind(tmp_path):
    default = load_set("default", tmp_path / "m.toml")
    assert default[0].id.startswith("default/chat@") and all(p.group == p.kind for p in default)
    (tmp_path / "mine.toml").write_text('[[prompt]]\nname = "a"\nkind = "k"\ngroup = "g"\ntext = "one"\n'
                                        '[[prompt]]\nname = "b"\nkind = "k"\ntext = "two"\n')
    mine = load_set("mine.toml?per_kind=1", tmp_path / "m.toml", ["g"])
    assert [(p.name, p.group) for p in mine] == [("a", "g")]
    assert mine[0].id.startswith("mine.toml/a@")


@pytest.mark.parametrize("content, prompts, message", [
    ('{"question_id": 1, "category": "qa", "turns": ["ok"]}\n{"question_id": 2, "turns": [\n',
     "spec-bench:q.jsonl", "line 2: not JSON"),
    ('{"question_id": 1, "category": "qa"}\n', "spec-bench:q.jsonl", 'line 1: no "turns"'),
    ('{"question_id": 1, "category": "qa", "turns": []}\n', "spec-bench:q.jsonl", "line 1: \"turns\" must be"),
    ('{"question_id": 1, "category": "qa", "turns": [""]}\n', "spec-bench:q.jsonl", "line 1: the prompt is empty"),
    ('\n\n', "spec-bench:q.jsonl", "empty (no JSON lines)"),
    ('[1, 2]\n', "spec-bench:q.jsonl", "line 1: not a JSON object"),
    ('{"question_id": 1, "category": "qa", "turns": ["a"]}\n{"question_id": 1, "category": "qa", "turns": ["b"]}\n',
     "spec-bench:q.jsonl", "line 2: 'qa-1' again (first on line 1)"),
    ('{"question_id": 1, "category": 5, "turns": ["a"]}\n', "spec-bench:q.jsonl", '"category" must be'),
    ('{"question_id": 1, "category": "qa", "turns": ["a"]}\n', "spec-bench:q.jsonl?per_kind=0", "per_kind must be"),
    ('{"question_id": 1, "category": "qa", "turns": ["a"]}\n', "spec-bench:q.jsonl?turn=2", "unknown option 'turn=2'"),
    ('', "spec-bench:missing.jsonl", "prompt set 'spec-bench:missing.jsonl' not found"),
    ('', "hf://models/o/n/q.jsonl", "expected hf://datasets/OWNER/NAME/FILE"),
    ('', "spec-bench:", "no file named"),
])
def test_bad_prompt_files_are_one_line_errors(tmp_path, content, prompts, message):
    (tmp_path / "q.jsonl").write_text(content)
    with pytest.raises(SpecsweepError) as e:
        load_set(prompts, tmp_path / "m.toml")
    assert message in e.value.message and "\n" not in e.value.message


# ----------------------------------------------------------------------------------------------
# hf:// through a Hugging Face cache in the standard layout, offline

REV = "89abcdef0123456789abcdef0123456789abcdef"
REPO = "specsweep-test/Tiny-Bench"


def put_in_cache(hub_cache: Path, file: str, data: bytes, repo: str = REPO) -> None:
    """Place a dataset file as hf_hub_download would: blobs/<sha256>, a relative symlink from
    snapshots/<revision>/<file>, and refs/main naming the revision."""
    root = hub_cache / f"datasets--{repo.replace('/', '--')}"
    blob = root / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = root / "snapshots" / REV / file
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(REV)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    put_in_cache(cache, "data/question.jsonl", "".join(json.dumps(q) + "\n" for q in QUESTIONS).encode())
    put_in_cache(cache, "sets/mine.toml", b'[[prompt]]\nname = "doc"\nkind = "long"\nfile = "../docs/a.txt"\n'
                                          b'text = "Summarise the document above."\n')
    put_in_cache(cache, "docs/a.txt", b"A lighthouse stands on the rock.\n")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hf_dataset_files_resolve_offline_from_the_cache(hub_cache, tmp_path):
    url = f"hf://datasets/{REPO}/data/question.jsonl"
    first = load_set(url + "?per_kind=1", tmp_path / "m.toml", ["translation"])
    assert [(p.name, p.text) for p in first] == [("translation-201", "Translate to French: good morning")]
    assert first[0].id.startswith(f"{url}/translation-201@")
    pinned = load_set(f"hf://datasets/{REPO}@{REV}/data/question.jsonl", tmp_path / "m.toml")
    assert [p.id for p in pinned] == [p.id for p in load_set(url, tmp_path / "m.toml")]  # the revision is not in the id
    # a TOML set on the Hub reads its `file` from the same repo and revision
    doc = load_set(f"hf://datasets/{REPO}/sets/mine.toml", tmp_path / "m.toml")
    assert doc[0].text == "A lighthouse stands on the rock.\n\nSummarise the document above."
    assert doc[0].kind == "long"


def test_hf_file_missing_offline_says_how_to_fetch_it(hub_cache, tmp_path):
    with pytest.raises(SpecsweepError) as e:
        load_set(f"hf://datasets/{REPO}/data/other.jsonl", tmp_path / "m.toml")
    msg = e.value.message
    assert "not in the Hugging Face cache" in msg and "HF_HUB_OFFLINE is set" in msg and "\n" not in msg
    assert f"hf download --repo-type dataset {REPO} data/other.jsonl" in msg
    assert f"specsweep run {tmp_path / 'm.toml'} --dry-run" in msg


# ----------------------------------------------------------------------------------------------
# specsweep run, end to end on the CPU

MATRIX = """
name = "bench"
design = "sequential"
[models]
target = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
[defaults]
target = "target"
gpus = []
threads = 2
n_ctx = 512
n_predict = 12
trials = 1
warmup = 0
prompts = "PROMPTS"
prompt_kinds = ["mt-bench", "translation"]
[[cell]]
method = "baseline"
[[cell]]
method = "ngram-mod"
n_match = 4
draft_min = 1
draft_max = 8
"""


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def write_matrix(folder: Path, prompts: str) -> Path:
    path = folder / "bench.toml"
    path.write_text(MATRIX.replace("PROMPTS", prompts))
    return path


def test_run_measures_a_spec_bench_file(bench, synth_cache, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(synth_cache))
    matrix = write_matrix(bench.parent, "spec-bench:data/question.jsonl?per_kind=1")
    results = bench.parent / "results"
    out = CliRunner().invoke(main, ["run", str(matrix), "--results", str(results)])
    assert out.exit_code == 0, out.output
    trials = read_jsonl(results / "bench" / "trials.jsonl")
    expected = {p.id: p for p in load_set("spec-bench:data/question.jsonl?per_kind=1", matrix,
                                          ["mt-bench", "translation"])}
    assert sorted(expected) == sorted({t["prompt_id"] for t in trials})  # writing-81, coding-121, translation-201
    assert len(trials) == 2 * 3 and {t["method"] for t in trials} == {"baseline", "ngram-mod"}
    assert {(t["prompt"], t["prompt_kind"]) for t in trials} == {("writing-81", "writing"), ("coding-121", "coding"),
                                                                 ("translation-201", "translation")}
    assert all(t["lossless"] and t["n_generated"] >= 1 for t in trials)
    again = CliRunner().invoke(main, ["run", str(matrix), "--results", str(results)])
    assert again.exit_code == 0 and "nothing to run" in again.output  # resume matches by prompt id


def test_run_with_a_broken_spec_bench_file_is_one_line_exit_2(bench, synth_cache, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(synth_cache))
    (bench.parent / "data" / "bad.jsonl").write_text('{"question_id": 1, "category": "qa", "turns": ["a"]}\n{oops\n')
    out = CliRunner().invoke(main, ["run", str(write_matrix(bench.parent, "spec-bench:data/bad.jsonl")),
                                    "--results", str(bench.parent / "results")])
    assert out.exit_code == 2 and out.output.strip().count("\n") == 0
    assert "bad.jsonl: line 2: not JSON" in out.output
    assert not (bench.parent / "results" / "bench" / "trials.jsonl").exists()


def test_dry_run_reads_an_hf_set_from_the_cache_with_hf_hub_offline(tmp_path, synth_cache):
    """As a user runs it: HF_HUB_CACHE and HF_HUB_OFFLINE=1 in the environment, a fresh process."""
    cache = tmp_path / "hub"
    put_in_cache(cache, "data/question.jsonl", "".join(json.dumps(q) + "\n" for q in QUESTIONS).encode())
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", SPECSWEEP_CACHE=str(synth_cache))

    def dry_run(prompts: str):
        return subprocess.run([sys.executable, "-m", "specsweep", "run", str(write_matrix(tmp_path, prompts)),
                               "--results", str(tmp_path / "results"), "--dry-run"],
                              capture_output=True, text=True, env=env, timeout=120)

    ok = dry_run(f"hf://datasets/{REPO}/data/question.jsonl")
    assert ok.returncode == 0, ok.stderr
    assert "prompts=5 trials=1" in ok.stdout  # 3 MT-bench + 2 translation
    shutil.rmtree(cache / f"datasets--{REPO.replace('/', '--')}" / "snapshots")
    gone = dry_run(f"hf://datasets/{REPO}/data/question.jsonl")
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    errors = [ln for ln in gone.stderr.splitlines() if ln.startswith("specsweep: error:")]
    assert len(errors) == 1 and "HF_HUB_OFFLINE is set" in errors[0] and "hf download" in errors[0]
