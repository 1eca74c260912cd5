"""Matrix files: expansion into cells, stable cell ids, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep import methods
from specsweep.errors import SpecsweepError
from specsweep.matrix.load import load

ROOT = Path(__file__).resolve().parent.parent
HEAD = """
name = "t"
[models]
tgt = { synth = "qwen3-30b-a3b", scale = "tiny" }
drf = { synth = "qwen3-0.6b", scale = "tiny" }
[defaults]
target = "tgt"
gpus = []
"""


def write(tmp_path, body: str, head: str = HEAD) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(head + body)
    return path


def test_axes_expand_in_order_and_defaults_fill_in(tmp_path):
    m = load(write(tmp_path, """
[[cell]]
method = "baseline"
kv = ["q8_0", "f16"]
[[cell]]
method = "draft"
draft = "drf"
draft_max = [8, 16]
draft_min = 2
"""))
    assert [(c.method, c.kv, c.settings.get("draft_max")) for c in m.cells] == [
        ("baseline", "q8_0", None), ("baseline", "f16", None), ("draft", "q8_0", 8), ("draft", "q8_0", 16)]
    assert m.cells[2].settings["p_min"] == 0.0 and m.cells[2].n_predict == 300
    assert len({c.id for c in m.cells}) == 4


def test_cell_id_ignores_name_and_trial_count_but_not_parameters(tmp_path):
    a = load(write(tmp_path, '[[cell]]\nname = "x"\nmethod = "ngram-mod"\nn_match = 8\ntrials = 2\n')).cells[0]
    b = load(write(tmp_path, '[[cell]]\nname = "y"\nmethod = "ngram-mod"\nn_match = 8\ntrials = 9\n')).cells[0]
    c = load(write(tmp_path, '[[cell]]\nmethod = "ngram-mod"\nn_match = 12\n')).cells[0]
    assert a.id == b.id != c.id
    assert (a.settings["draft_min"], a.settings["draft_max"]) == (48, 64)  # llama.cpp's ngram-mod defaults


def test_shipped_matrices_load():
    smoke = load(ROOT / "matrices" / "smoke.toml")
    # the smoke matrix runs every method of the registry, and some with synthetic acceptance
    assert {c.method for c in smoke.cells} == set(methods.NAMES)
    assert any(c.settings.get("synth_len") is not None for c in smoke.cells)
    a3b = load(ROOT / "matrices" / "a3b.toml")
    names = [c.name for c in a3b.cells]
    assert len(names) == len(set(names))
    v1 = [c for c in a3b.cells if c.name.startswith("v1")]
    mod = [c for c in v1 if c.method == "ngram-mod"]
    assert sorted({c.n_match for c in mod}) == [8, 12, 16, 20, 24, 32]
    assert all(c.kv == "q8_0" and c.flash_attn and c.n_predict in (300, 1000) and c.n_ctx == 4096 for c in v1
               if c.method not in ("ngram-cache", "baseline"))
    # the ngram-cache KV/length sweep has a baseline of its own at each point (blocks pair by it)
    assert {(c.kv, c.n_predict) for c in v1 if c.method == "baseline" and c.models["target"].name == "a3b"} == {
        ("q8_0", 300), ("f16", 300), ("q8_0", 1000), ("f16", 1000)}
    assert {(c.kv, c.n_predict) for c in v1 if c.method == "ngram-cache"} == {
        ("q8_0", 300), ("f16", 300), ("q8_0", 1000), ("f16", 1000)}
    draft = {(c.settings["draft_min"], c.settings["draft_max"]) for c in v1 if c.method == "draft"}
    assert draft == {(0, 8), (0, 16), (0, 32), (2, 16), (2, 32), (2, 64), (48, 64)}
    assert sorted(c.settings["draft_max"] for c in v1 if c.method == "dflash") == [4, 8, 16]
    mtp = [c for c in v1 if c.method == "mtp"]
    assert sorted(c.settings["draft_max"] for c in mtp) == [1, 2, 3]
    assert {c.models["target"].name for c in mtp} == {"a3b_mtp"}
    assert any(c.method == "baseline" and c.models["target"].name == "a3b_mtp" for c in v1)
    # the v4 audit's run O2: nine arms, thinking on, 300 tokens, context 8192, KV q8_0, draft KV f16
    v4 = {c.name: c for c in a3b.cells if c.name.startswith("v4")}
    arms = {(c.method, c.settings.get("draft_max")) for c in v4.values()} - {("baseline", None)}
    assert arms == {("dflash", 2), ("dflash", 4), ("mtp", 2), ("ngram-map-k4v", None), ("ngram-mod", 64),
                    ("ngram-cache", 8), ("draft", 1), ("draft", 8)}
    assert all(c.settings["thinking"] is True and c.n_predict == 300 and c.n_ctx == 8192 and c.kv == "q8_0"
               and c.settings["ignore_eos"] for c in v4.values())
    assert all(c.settings.get("draft_kv") == "f16" and c.settings["draft_min"] == 1 for c in v4.values()
               if c.method in ("draft", "dflash", "mtp"))
    assert v4["v4 ngram-map-k4v m8"].settings["size_m"] == 8 and v4["v4 ngram-map-k4v m8"].settings["size_n"] == 12
    assert all(c.models["draft"].override_kv == ("tokenizer.ggml.bos_token_id=int:248044",)
               for c in v4.values() if c.method == "draft")


@pytest.mark.parametrize("body, message", [
    ('[[cell]]\nmethod = "baseline"\nkv = \n', "malformed TOML"),
    ('[[cell]]\nmethod = "medusa"\n', "unknown method 'medusa'"),
    ('[[cell]]\nmethod = "baseline"\ndraft_max = 4\n', "method 'baseline' has no parameter 'draft_max'"),
    ('[[cell]]\nmethod = "draft"\ndraft = "drf"\ntemperature = 0.7\n', "unknown parameter 'temperature'"),
    ('[[cell]]\nmethod = "draft"\ndraft = "drf"\ndraft_min = 9\ndraft_max = 4\n', "draft_min 9 > draft_max 4"),
    ('[[cell]]\nmethod = "baseline"\nn_predict = 0\n', "n_predict = 0 is below 1"),
    ('[[cell]]\nmethod = "baseline"\nkv = "q5_1"\n', "kv = 'q5_1' is not one of q8_0, f16"),
    ('[[cell]]\nmethod = "draft"\n', "needs a draft model"),
    ('[[cell]]\nmethod = "baseline"\n[[cell]]\nmethod = "baseline"\nname="again"\n', "are the same configuration"),
    # the new methods' own keys, and synthetic acceptance, with llama.cpp's own wording
    ('[[cell]]\nmethod = "ngram-simple"\nmin_hits = 2\n', "method 'ngram-simple' has no parameter 'min_hits'"),
    ('[[cell]]\nmethod = "ngram-map-k4v"\nsize_m = 2000\n', "size_m = 2000 is above 1024"),
    ('[[cell]]\nmethod = "eagle3"\n', "needs a drafter model"),
    ('[[cell]]\nmethod = "mtp"\nsynth_len = 2.0\nsynth_rates = [0.5, 0.4, 0.3]\n',
     "synthetic acceptance length and rates are mutually exclusive"),
    ('[[cell]]\nmethod = "mtp"\ndraft_max = 3\nsynth_rates = [0.5, 0.4]\n',
     "synthetic acceptance rates must contain 3 values, got 2"),
    ('[[cell]]\nmethod = "mtp"\ndraft_max = 2\nsynth_rates = [0.4, 0.5]\n',
     "synthetic acceptance rates must be monotonically non-increasing"),
    ('[[cell]]\nmethod = "mtp"\ndraft_max = 2\nsynth_rates = [1.5, 0.5]\n',
     "synthetic acceptance rates must be finite and within [0, 1]"),
    ('[[cell]]\nmethod = "mtp"\ndraft_max = 2\nsynth_len = 3.5\n',
     "synthetic acceptance length must be finite and within [1, 3]"),
    ('[[cell]]\nmethod = "baseline"\nsynth_len = 2.0\n', "method 'baseline' has no parameter 'synth_len'"),
])
def test_bad_matrices_are_refused_with_one_line(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(SpecsweepError) as err:
        load(path)
    assert message in err.value.message and "\n" not in err.value.message
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output


def test_malformed_toml_names_line_and_column(tmp_path):
    path = write(tmp_path, '[[cell]]\nmethod = "baseline"\nkv = \n')
    with pytest.raises(SpecsweepError) as err:
        load(path)
    n_line = (HEAD + '[[cell]]\nmethod = "baseline"\nkv = \n').count("\n")
    assert f"line {n_line}" in err.value.message and "column" in err.value.message


def test_missing_model_file_and_missing_prompt_set(tmp_path):
    head = HEAD.replace('tgt = { synth = "qwen3-30b-a3b", scale = "tiny" }', 'tgt = { path = "nope.gguf" }')
    path = write(tmp_path, '[[cell]]\nmethod = "baseline"\n', head)
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2 and "file not found" in result.output and "nope.gguf" in result.output
    path = write(tmp_path, '[[cell]]\nmethod = "baseline"\nprompts = "mine.toml"\n')
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2 and "prompt set 'mine.toml' not found" in result.output


def test_layout_keys_at_their_neutral_value_leave_the_cell_id_alone(tmp_path):
    """Keys added after records existed must not turn recorded cells into new ones."""
    plain = load(write(tmp_path, '[[cell]]\nmethod = "baseline"\n')).cells[0]
    spelled = load(write(tmp_path, '[[cell]]\nmethod = "baseline"\nsplit_mode = "row"\ntensor_split = []\n')).cells[0]
    split = load(write(tmp_path, '[[cell]]\nmethod = "baseline"\ngpus = [[0, 1]]\nsplit_mode = "row"\n')).cells[0]
    assert plain.id == spelled.id != split.id
    assert "split_mode" not in plain.identity() and split.identity()["split_mode"] == "row"


def test_the_readme_and_docs_name_every_method_and_key():
    """The README's methods table lists the registry's methods, with llama.cpp's spec types, and
    docs/matrix.md's key table every key (it is `specsweep keys --markdown`)."""
    readme = (ROOT / "README.md").read_text()
    for m in methods.METHODS.values():
        assert f"| `{m.name}` | {f'`{m.spec_type}`' if m.spec_type else 'none'} |" in readme, m.name
    docs = (ROOT / "docs" / "matrix.md").read_text()
    for key in methods.all_keys():
        assert f"| `{key}` |" in docs, key
    table = CliRunner().invoke(main, ["keys", "--markdown"]).output
    assert table.strip() in docs  # the whole table, defaults and meanings too


def test_synthetic_rates_are_checked_against_a_block_drafters_real_limit(tmp_path):
    """DFlash clamps draft_max 16 to its block size - 1 = 15: 16 rates pass the matrix and are
    refused from the drafter's header before anything loads (llama.cpp resolves them after the cap)."""
    rates = ", ".join(["0.5"] * 16)
    head = HEAD.replace('tgt = { synth = "qwen3-30b-a3b", scale = "tiny" }',
                        'tgt = { synth = "qwen3.6-35b-a3b", scale = "tiny" }\n'
                        'df = { synth = "qwen3.6-35b-a3b-dflash", scale = "tiny" }')
    path = write(tmp_path, f'[[cell]]\nmethod = "baseline"\n[[cell]]\nmethod = "dflash"\ndrafter = "df"\n'
                           f'draft_max = 16\nsynth_rates = [{rates}]\n', head)
    load(path)  # the matrix alone cannot know the block size
    r = CliRunner().invoke(main, ["run", str(path), "--results", str(tmp_path / "r")])
    assert r.exit_code == 2, r.output
    assert "synthetic acceptance rates must contain 15 values, got 16" in r.output
    assert "drafts at most 15 tokens per block" in r.output


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "matrices").glob("*.toml")
                                        if not p.name.endswith("-prompts.toml")))  # those are prompt files
def test_every_committed_matrix_plans(path, tmp_path, monkeypatch):
    """A matrix committed for a device run must not first fail there: each one loads, and its dry run
    (cells, groups, placements and models, nothing loaded) exits 0."""
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["run", str(ROOT / "matrices" / path), "--dry-run",
                                       "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "cells" in result.output and not (tmp_path / "results").exists()
