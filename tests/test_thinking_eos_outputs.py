"""What a trial is asked and what it answered: `thinking` (the chat template rendered with jinja2 and
enable_thinking), `ignore_eos` (end-of-generation tokens banned, as llama.cpp's --ignore-eos), and
the stored outputs every trial keeps."""

from __future__ import annotations

import pytest

from specsweep.engine import runtime
from specsweep.engine.speculative import run_trial
from specsweep.errors import SpecsweepError
from specsweep.records import outputs
from specsweep.records.store import read_jsonl
from tests.conftest import run_cli as run

MATRIX = """
name = "tk"
design = "sequential"
[models]
target = { synth = "qwen3.6-35b-a3b", scale = "tiny", branch_scale = 0.05 }
[defaults]
target = "target"
gpus = []
threads = 2
n_ctx = 512
n_predict = 24
trials = 1
warmup = 0
prompt_kinds = ["chat"]
[[cell]]
name = "baseline thinking={thinking}"
method = "baseline"
thinking = [true, false]
[[cell]]
name = "ngram-mod thinking={thinking}"
method = "ngram-mod"
n_match = 4
draft_min = 1
draft_max = 8
thinking = [true, false]
"""


pytestmark = pytest.mark.usefixtures("module_synth_cache")  # models written once per module


def test_thinking_renders_the_templates_switch(tiny_model):
    path = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05)
    with runtime.Model(path, (), vocab_only=True) as m:
        on, off, plain = m.chat_prompt("hi", True), m.chat_prompt("hi", False), m.chat_prompt("hi")
    assert on.endswith("<|im_start|>assistant\n<think>\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert plain.endswith("<|im_start|>assistant\n")  # llama.cpp's own ChatML renderer: no switch


def test_thinking_on_a_template_without_the_switch_is_refused(tmp_path, tiny_model):
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    src = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05)
    dst = tmp_path / "noswitch.gguf"
    plain = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
             "'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(
        gguf.GGUFValueType.STRING, plain)}, [])
    with runtime.Model(dst, (), vocab_only=True) as m:
        with pytest.raises(SpecsweepError, match="has no thinking switch"):
            m.chat_prompt("hi", True)
    matrix = tmp_path / "m.toml"
    matrix.write_text(MATRIX.replace('{ synth = "qwen3.6-35b-a3b", scale = "tiny", branch_scale = 0.05 }',
                                     f'{{ path = "{dst}" }}'))
    r = run(matrix, "--results", tmp_path / "r")
    assert r.exit_code == 2 and "has no thinking switch" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "tk" / "trials.jsonl").exists() or not read_jsonl(tmp_path / "r" / "tk" / "trials.jsonl")


def test_thinking_is_part_of_the_cell_and_recorded(tmp_path):
    matrix = tmp_path / "m.toml"
    matrix.write_text(MATRIX)
    r = run(matrix, "--results", tmp_path / "r")
    assert r.exit_code == 0, r.output
    recs = read_jsonl(tmp_path / "r" / "tk" / "trials.jsonl")
    by = {(t["method"], t["settings"]["thinking"]): t for t in recs}
    assert len(by) == 4 and len({t["cell_id"] for t in recs}) == 4
    # a thinking prompt ends in an open think block; these random models never close it
    on, off = by[("baseline", True)], by[("baseline", False)]
    assert on["think"] == {"opened": True, "by_prompt": True, "closed": False, "tokens": on["n_generated"]}
    assert off["think"] is None and on["prompt_tokens"] < off["prompt_tokens"]
    assert on["reference_key"] != off["reference_key"]  # the baseline each compares with is its own
    assert by[("ngram-mod", True)]["reference_key"] == on["reference_key"]


def _stops_early(model, ctx, n_predict: int) -> list[int] | None:
    """A prompt whose greedy continuation ends at an end-of-generation token (None if none does)."""
    for seed in range(60):
        tokens = model.tokenize(f"Sample {seed}: {'abc ' * (seed % 7)} the end.")
        ctx.clear()
        out = run_trial(ctx, tokens, n_predict).tokens
        if model.is_eog(out[-1]) and len(out) < n_predict:
            return tokens
    return None


def test_ignore_eos_runs_every_trial_to_n_predict(tiny_model):
    path = tiny_model("qwen3.6-35b-a3b", seed=3)
    n = 96
    with runtime.Model(path, ()) as model:
        opts = runtime.ContextOptions(n_ctx=512, n_batch=256, n_threads=2)
        with runtime.Context(model, opts) as ctx:
            prompt = _stops_early(model, ctx, n)
        assert prompt is not None, "no prompt of the search ended early: pick another model"
        with runtime.Context(model, opts) as plain, runtime.Context(
                model, runtime.ContextOptions(n_ctx=512, n_batch=256, n_threads=2, ignore_eos=True)) as banned:
            stopped = run_trial(plain, prompt, n).tokens
            full = run_trial(banned, prompt, n).tokens
    assert len(stopped) < n and len(full) > n  # llama.cpp's loop overshoots n_predict by one
    # (position, id, whether the context's ban list holds it): one CI run in ~7 saw an EOG here and
    # no rerun has; the message says which mechanism failed when it comes back
    eog = [(i, t, t in model.eog_tokens) for i, t in enumerate(full) if model.is_eog(t)]
    assert not eog, f"end-of-generation tokens in an ignore_eos trial: {eog} (n_vocab {model.n_vocab})"
    assert full[: len(stopped) - 1] == stopped[:-1]  # the same text up to where the other one ended


def test_outputs_round_trip():
    ids = [0, 7, 248319, 2**31 - 1] + list(range(300))
    packed = outputs.pack(ids, "text ✓")
    record = {"output": packed}
    assert outputs.ids(record) == ids and outputs.text(record) == "text ✓" and packed["n"] == len(ids)
    assert len(packed["ids_z"]) < len(",".join(map(str, ids)))
    assert outputs.ids({}) is None
    assert outputs.first_difference([1, 2, 3], [1, 2, 4]) == 2
    assert outputs.first_difference([1, 2], [1, 2, 3]) == 2 and outputs.first_difference([1], [1]) is None
