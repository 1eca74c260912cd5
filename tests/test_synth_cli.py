"""`specsweep synth` from the command line: cards, drafts, and one-line errors for bad input."""

from __future__ import annotations

import filecmp

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.synth import writer
from specsweep.synth.cards import CARDS


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)))


def test_help_lists_every_card():
    result = run("synth", "--help")
    assert result.exit_code == 0
    for name in CARDS:
        assert name in result.output


def tensors(path):
    return {t.name: np.asarray(t.data).copy() for t in gguf.GGUFReader(path).tensors}


def test_like_identical_is_byte_identical_and_perturb_touches_only_the_head(tmp_path):
    target, same, near = tmp_path / "t.gguf", tmp_path / "same.gguf", tmp_path / "near.gguf"
    assert run("synth", "qwen3.6-35b-a3b", "--scale", "tiny", "-o", target).exit_code == 0
    assert run("synth", "--like", target, "--identical", "-o", same).exit_code == 0
    assert filecmp.cmp(target, same, shallow=False)

    result = run("synth", "--like", target, "--perturb", "0.25", "-o", near)
    assert result.exit_code == 0, result.output
    a, b = tensors(target), tensors(near)
    changed = [name for name in a if not np.array_equal(a[name], b[name])]
    assert changed == ["output.weight"]
    rows_changed = (a["output.weight"] != b["output.weight"]).any(axis=1).mean()
    assert 0.15 < rows_changed < 0.35
    assert writer.read_recipe_fields(near)["perturb"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["synth", "qwen9-1t", "--scale", "tiny"], "qwen9-1t"),
        (["synth", "qwen3-0.6b", "--scale", "huge"], "huge"),
        (["synth", "qwen3-0.6b", "--scale", "tiny", "--wtype", "Q2_K"], "Q2_K"),
        (["synth", "qwen3-0.6b", "--scale", "tiny", "--perturb", "0.5"], "--like"),
        (["synth", "--like", "{target}", "--perturb", "1.5"], "[0, 1]"),
        (["synth", "--like", "{target}", "--perturb", "-0.1"], "[0, 1]"),
        (["synth", "--like", "{target}"], "exactly one"),
        (["synth", "--like", "{target}", "--identical", "--seed", "3"], "contradicts"),
        (["synth", "--like", "{notgguf}", "--identical"], "not a readable GGUF"),
        (["synth"], "shape card"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    target = tmp_path / "t.gguf"
    run("synth", "qwen3-0.6b", "--scale", "tiny", "-o", target)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    out = tmp_path / "out.gguf"
    args = [a.format(target=target, notgguf=tmp_path / "junk.gguf") for a in args] + ["-o", out]
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("specsweep: error:"), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing/dir/m.gguf", "ro/m.gguf"])
def test_unwritable_output_is_refused_before_writing(tmp_path, where):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        result = run("synth", "qwen3-0.6b", "--scale", "tiny", "-o", tmp_path / where)
    finally:
        (tmp_path / "ro").chmod(0o700)
    import os

    if where.startswith("ro") and os.geteuid() == 0:
        # root ignores directory permissions; the check uses access(2), which says writable
        assert result.exit_code in (0, 2)
        return
    assert result.exit_code == 2
    assert "cannot write" in result.stderr


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    out = tmp_path / "m.gguf"

    def boom(n):
        raise KeyboardInterrupt

    recipe = writer.Recipe(CARDS["qwen3.6-27b"].at_scale("tiny"), "tiny", "Q4_0")
    with pytest.raises(KeyboardInterrupt):
        writer.write_model(recipe, out, progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_synth_mtp_adds_one_nextn_layer_and_refuses_other_archs(tmp_path):
    out = tmp_path / "t.gguf"
    res = CliRunner().invoke(main, ["synth", "qwen3.6-35b-a3b", "--scale", "tiny", "--mtp", "-o", str(out)])
    assert res.exit_code == 0, res.output
    reader = gguf.GGUFReader(out)
    assert reader.fields["qwen35moe.nextn_predict_layers"].contents() == 1
    assert reader.fields["qwen35moe.block_count"].contents() == 5  # 4 trunk layers + the MTP layer
    assert any(t.name == "blk.4.nextn.eh_proj.weight" for t in reader.tensors)
    res = CliRunner().invoke(main, ["synth", "qwen3-30b-a3b", "--scale", "tiny", "--mtp", "-o", str(tmp_path / "x.gguf")])
    assert res.exit_code == 2 and "--mtp needs a Qwen3.5/3.6 card" in res.output
