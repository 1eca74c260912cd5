"""The in-process DFlash converter: a synthetic drafter written as a z-lab checkpoint converts back
to the synth GGUF tensor for tensor, with the metadata llama.cpp's convert_hf_to_gguf.py writes;
llama.cpp loads and drafts with the result; bad checkpoints are refused with one line and nothing
written; `specsweep fetch` converts a dflash entry from a Hugging Face cache, offline.

The expected keys and general.* values below are what llama.cpp's own converter (the llama.cpp
vendored in llama-cpp-python 0.3.36, transformers 4.57.6) wrote for the same tiny checkpoints in a
folder named Qwen3.6-35B-A3B-DFlash: benchmarks/dflash_convert_vs_llama.py compares the two files
key for key and byte for byte (0 differences for both cards, bf16 and f16).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from huggingface_hub import constants

from specsweep.engine import runtime
from specsweep.engine.drafters import DFlash
from specsweep.engine.speculative import run_trial
from specsweep.errors import SpecsweepError
from specsweep.models import lockfile
from specsweep.models.dflash_convert import NeedsLlamaCpp, convert
from specsweep.models.drafter_fit import check_dflash
from specsweep.models.resolve import converted_path, resolve_locked
from specsweep.synth.cards import CARDS
from tests.conftest import PROMPT
from tests.dflash_checkpoint import hf_name, save_safetensors, write_checkpoint, zlab_config
from tests.test_models_fetch import REV, one_line_error, put_in_cache, sha256

APRIL, JUNE, TARGET = "qwen3.6-35b-a3b-dflash", "qwen3.6-35b-a3b-dflash-jun26", "qwen3.6-35b-a3b"
FOLDER = "Qwen3.6-35B-A3B-DFlash"
OPTS = runtime.ContextOptions(n_ctx=512, n_batch=64, type_kv="f16", n_threads=2)

# llama.cpp's converter's keys for a z-lab drafter of a Qwen3.6 (M-RoPE) target, besides tokenizer.*
LLAMA_KEYS = {
    "general.architecture", "general.type", "general.name", "general.finetune", "general.basename",
    "general.size_label", "dflash.block_count", "dflash.context_length", "dflash.embedding_length",
    "dflash.feed_forward_length", "dflash.attention.head_count", "dflash.attention.head_count_kv",
    "dflash.rope.freq_base", "dflash.attention.layer_norm_rms_epsilon", "dflash.attention.key_length",
    "dflash.attention.value_length", "general.file_type", "dflash.block_size", "dflash.target_layers",
    "dflash.rope.dimension_sections", "general.quantization_version",
}
SWA_KEYS = {"dflash.attention.sliding_window", "dflash.attention.sliding_window_pattern"}
LLAMA_GENERAL = {"general.type": "model", "general.name": "Qwen3.6 35B A3B DFlash", "general.basename": "Qwen3.6",
                 "general.finetune": "35b-DFlash", "general.size_label": "A3B"}
# keys whose values the synth file and its conversion share (the synth writer mirrors the converter)
SHARED = ("dflash.block_count", "dflash.context_length", "dflash.embedding_length", "dflash.feed_forward_length",
          "dflash.attention.head_count", "dflash.attention.head_count_kv", "dflash.attention.key_length",
          "dflash.attention.value_length", "dflash.rope.freq_base", "dflash.attention.layer_norm_rms_epsilon",
          "dflash.block_size", "dflash.target_layers", "tokenizer.ggml.mask_token_id")


def fields(path: Path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


def tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".partial")


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    """checkpoint(card, dtype="BF16", shards=1, branch_scale=1.0) -> a z-lab checkpoint of the tiny synth drafter."""
    def make(card: str, dtype: str = "BF16", shards: int = 1, branch_scale: float = 1.0) -> Path:
        synth = tiny_model(card, wtype="F16", branch_scale=branch_scale)
        return write_checkpoint(synth, CARDS[card].at_scale("tiny"), tmp_path / f"{card}-{dtype}" / FOLDER, dtype,
                                shards)
    return make


@pytest.mark.parametrize("card", [APRIL, JUNE])
@pytest.mark.parametrize("dtype,shards", [("F16", 1), ("BF16", 2)])
def test_checkpoint_converts_back_to_the_synth_gguf(tiny_model, checkpoint, tmp_path, card, dtype, shards):
    synth, target = tiny_model(card, wtype="F16"), tiny_model(TARGET)
    out = tmp_path / "converted.gguf"
    result = convert(checkpoint(card, dtype, shards), target, out)
    assert result.path == out and result.file_type == dtype and leftovers(tmp_path) == []

    want, got = tensors(synth), tensors(out)
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert list(g.shape) == list(w.shape), name
        if w.tensor_type == gguf.GGMLQuantizationType.F32:  # norms: F32 in both, z-lab's bf16 ones are exact
            assert g.tensor_type == w.tensor_type and np.array_equal(g.data, w.data), name
        elif dtype == "F16":  # f16 matrices: the synth file's bytes
            assert g.tensor_type == w.tensor_type and np.array_equal(g.data, w.data), name
        else:  # bf16 matrices: the synth values rounded to bf16 (8 significant bits)
            assert g.tensor_type == gguf.GGMLQuantizationType.BF16, name
            as_f32 = (np.asarray(g.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            ref = np.asarray(w.data, dtype=np.float32).reshape(as_f32.shape)
            assert np.allclose(as_f32, ref, rtol=2 ** -8, atol=0) and not np.array_equal(as_f32, ref), name

    have, synth_keys, target_keys = fields(out), fields(synth), fields(target)
    tokenizer = {k for k in target_keys if k.startswith("tokenizer.")}
    swa = SWA_KEYS if CARDS[card].swa_window else set()
    assert set(have) == LLAMA_KEYS | swa | tokenizer | {"tokenizer.ggml.mask_token_id"}
    assert {k: have[k] for k in LLAMA_GENERAL} == LLAMA_GENERAL
    assert have["general.file_type"] == {"F16": 1, "BF16": 32}[dtype]
    for k in SHARED + tuple(swa):
        assert have[k] == synth_keys[k], k
    # a drafter of an M-RoPE target ropes on the temporal dimension only: [head_dim/2, 0, 0, 0]
    assert have["dflash.rope.dimension_sections"] == [CARDS[card].at_scale("tiny").head_dim // 2, 0, 0, 0]
    for k in tokenizer:  # the vocabulary is the target's, the mask token the drafter's
        assert have[k] == target_keys[k], k
    assert have["tokenizer.ggml.mask_token_id"] == CARDS[card].at_scale("tiny").mask_token_id
    check_dflash("t", target, "d", out)  # the header checks a run makes: it fits its target


def test_converted_drafter_drafts_as_the_synth_drafter_does(tiny_model, checkpoint, tmp_path):
    """The June layout (sliding window, M-RoPE sections) converted from f16 is the synth drafter:
    llama.cpp loads it and it drafts and is accepted exactly as the synth file is; the bf16
    conversion of the April layout loads and drafts too, losslessly."""
    june = convert(checkpoint(JUNE, "F16", branch_scale=0.05), tiny_model(TARGET), tmp_path / "june.gguf").path
    april = convert(checkpoint(APRIL, "BF16", branch_scale=0.05), tiny_model(TARGET), tmp_path / "april.gguf").path
    runs = {}
    with runtime.Model(tiny_model(TARGET, branch_scale=0.05), ()) as model, runtime.Context(model, OPTS) as ctx:
        prompt = model.tokenize(PROMPT)
        plain = run_trial(ctx, prompt, 40).tokens
        for key, path in (("synth", tiny_model(JUNE, wtype="F16", branch_scale=0.05)), ("june", june),
                          ("april", april)):
            ctx.clear()
            with runtime.Model(path, ()) as dmodel, runtime.Context(dmodel, OPTS, other=ctx) as dctx:
                if key == "june":
                    assert dmodel.meta("dflash.attention.sliding_window") == "32"
                runs[key] = run_trial(ctx, prompt, 40, DFlash(dctx, ctx, n_max=8))
    for r in runs.values():
        assert r.tokens[:40] == plain[:40] and r.n_drafted > 0
    assert (runs["june"].tokens, runs["june"].n_drafted, runs["june"].n_accepted) == \
        (runs["synth"].tokens, runs["synth"].n_drafted, runs["synth"].n_accepted)


def _rewrite(ckpt: Path, drop: str | None = None, **config_changes) -> None:
    if drop is not None:  # the other tensors' bytes and types as they were
        path = ckpt / "model.safetensors"
        with gguf.utility.SafetensorsLocal(path) as local:
            keep = {n: ({"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[t.dtype], list(t.shape),
                        t.mmap_bytes().tobytes()) for n, t in local.items() if n != drop}
        save_safetensors(keep, path)
    if config_changes:
        cfg = json.loads((ckpt / "config.json").read_text())
        for k, v in config_changes.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        (ckpt / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("change,needle,llama", [
    (dict(drop="layers.1.mlp.up_proj.weight"), "lacks tensor layers.1.mlp.up_proj.weight", False),
    (dict(hidden_size=None), r"config.json: no hidden_size", False),
    (dict(dflash_config={"target_layer_ids": [0, 2]}), "no dflash_config.mask_token_id", False),
    (dict(num_key_value_heads=4), r"self_attn.k_proj.weight has shape \[64, 128\], config.json implies \[128, 128\]",
     False),
    (dict(vocab_size=4096), "vocab_size 4096 differs from the 2048 tokens", False),
    (dict(num_hidden_layers=1, layer_types=["full_attention"]), r"tensor layers\.1\.\S+ is beyond the 1 layers", False),
    (dict(torch_file="mask_embedding.pt"), "ships mask_embedding.pt", True),
    (dict(torch_file="pytorch_model.bin", drop_safetensors=True), r"has only torch files \(pytorch_model.bin\)", True),
    (dict(partial_rotary_factor=0.5), "config uses partial_rotary_factor", True),
])
def test_bad_checkpoints_are_refused_with_one_line_and_nothing_written(tiny_model, checkpoint, tmp_path, change,
                                                                      needle, llama):
    ckpt = checkpoint(APRIL, "F16")
    change = dict(change)
    if torch_file := change.pop("torch_file", None):
        (ckpt / torch_file).write_bytes(b"PK\x03\x04 a torch zip")
    if change.pop("drop_safetensors", False):
        (ckpt / "model.safetensors").unlink()
    _rewrite(ckpt, **change)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(SpecsweepError, match=needle) as err:
        convert(ckpt, tiny_model(TARGET), out_dir / "d.gguf")
    message = err.value.message
    assert "\n" not in message
    assert isinstance(err.value, NeedsLlamaCpp) == llama
    if llama:  # names llama.cpp's converter, which needs the target's Hugging Face folder
        assert "convert_hf_to_gguf.py" in message and "--target-model-dir" in message
    assert list(out_dir.iterdir()) == []


def test_a_checkpoint_that_is_no_drafter_is_refused(tiny_model, checkpoint, tmp_path):
    ckpt = checkpoint(APRIL, "F16")
    _rewrite(ckpt, architectures=["Qwen3ForCausalLM"])
    with pytest.raises(SpecsweepError, match="is not a DFlash drafter"):
        convert(ckpt, tiny_model(TARGET), tmp_path / "d.gguf")
    _rewrite(ckpt, architectures=["DFlashDraftModel"])
    with pytest.raises(SpecsweepError, match="not a readable GGUF"):
        convert(ckpt, ckpt / "config.json", tmp_path / "d.gguf")
    assert not (tmp_path / "d.gguf").exists()


# ----------------------------------------------------------------------------------------------
# `specsweep fetch` of a dflash entry against a Hugging Face cache, offline

REPO_DF, REPO_TG = "specsweep-test/Tiny-DFlash", "specsweep-test/Tiny-Target-GGUF"


@pytest.fixture
def hub_world(tiny_model, checkpoint, tmp_path, monkeypatch):
    """An HF_HUB_CACHE holding a tiny target GGUF and a z-lab checkpoint, and a lock naming both."""
    hub_cache = tmp_path / "hub"
    target = tiny_model(TARGET)
    put_in_cache(hub_cache, REPO_TG, "Tiny-Target-Q4_0.gguf", target)
    ckpt = checkpoint(JUNE, "BF16")

    def lock_with(ckpt: Path, extra: tuple[str, ...] = ()) -> Path:
        names = ("config.json", "model.safetensors", *extra)
        for n in names:
            put_in_cache(hub_cache, REPO_DF, n, ckpt / n)
        files = tuple(lockfile.LockedFile(n, sha256(ckpt / n), (ckpt / n).stat().st_size) for n in names)
        entries = (
            lockfile.LockEntry("tiny-target", "target", REPO_TG, REV,
                               (lockfile.LockedFile("Tiny-Target-Q4_0.gguf", sha256(target), target.stat().st_size),),
                               None, ("vocab",)),
            lockfile.LockEntry("tiny-dflash", "dflash", REPO_DF, REV, files, None, ("vocab",), "",
                               {"tool": "convert_hf_to_gguf.py", "target_repo": "specsweep-test/Tiny-Target-HF",
                                "target_revision": REV, "target_files": ["tokenizer.json"],
                                "args": ["--outtype", "bf16"], "output": "Tiny-DFlash-bf16.gguf",
                                "target_gguf": "tiny-target"}))
        lock = tmp_path / "dflash.lock"
        lockfile.save(lockfile.Lock(lock, entries))
        return lock

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "specsweep-cache"))
    return {"hub": hub_cache, "ckpt": ckpt, "target": target, "lock_with": lock_with, "tmp": tmp_path}


def fetch_cli(world, *args):
    env = dict(os.environ, HF_HUB_CACHE=str(world["hub"]), HF_HUB_OFFLINE="1",
               SPECSWEEP_CACHE=str(world["tmp"] / "specsweep-cache"))
    env.pop("HF_HOME", None)
    return subprocess.run([sys.executable, "-m", "specsweep", "fetch", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_fetch_converts_a_dflash_entry_and_verifies_it(hub_world):
    lock = hub_world["lock_with"](hub_world["ckpt"])
    r = fetch_cli(hub_world, "tiny-dflash", "--lock", lock)
    assert r.returncode == 0, r.stderr
    out = converted_path(lockfile.load(lock).get("tiny-dflash"))
    assert r.stdout.strip() == f"tiny-dflash\t{out}"
    assert "header checked against tiny-target" in r.stderr
    meta = fields(out)
    assert meta["general.architecture"] == "dflash" and meta["general.name"] == "Tiny-DFlash"
    assert meta["specsweep.convert.source"] == f"{REPO_DF}@{REV}"
    assert meta["specsweep.convert.target"] == f"{REPO_TG}/Tiny-Target-Q4_0.gguf"
    assert meta["dflash.attention.sliding_window_pattern"] == [True, True, False]
    check_dflash("t", hub_world["target"], "d", out)
    assert leftovers(out.parent) == []

    stamp = out.stat().st_mtime_ns  # fetched again: current, kept
    again = fetch_cli(hub_world, "tiny-dflash", "--lock", lock)
    assert again.returncode == 0 and "is current" in again.stderr and out.stat().st_mtime_ns == stamp
    assert resolve_locked("tiny-dflash", lock_path=lock) == out


def test_resolve_converts_a_missing_drafter_in_process(hub_world):
    lock = hub_world["lock_with"](hub_world["ckpt"])
    out = converted_path(lockfile.load(lock).get("tiny-dflash"))
    assert resolve_locked("tiny-dflash", fetch=False, lock_path=lock) == out and not out.exists()
    assert resolve_locked("tiny-dflash", lock_path=lock) == out and out.is_file()


def test_fetch_of_a_bad_checkpoint_is_one_line_exit_2_and_writes_nothing(hub_world):
    ckpt = hub_world["ckpt"]
    _rewrite(ckpt, drop=hf_name("blk.0.attn_q.weight"))
    lock = hub_world["lock_with"](ckpt)
    r = fetch_cli(hub_world, "tiny-dflash", "--lock", lock)
    assert r.returncode == 2
    assert "lacks tensor layers.0.self_attn.q_proj.weight" in one_line_error(r.stderr)
    out = converted_path(lockfile.load(lock).get("tiny-dflash"))
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])


def test_fetch_of_a_torch_only_checkpoint_names_llama_cpps_converter(hub_world):
    ckpt = hub_world["ckpt"]
    (ckpt / "mask_embedding.pt").write_bytes(b"PK\x03\x04 a torch zip")
    put_in_cache(hub_world["hub"], "specsweep-test/Tiny-Target-HF", "tokenizer.json", ckpt / "config.json")
    lock = hub_world["lock_with"](ckpt, extra=("mask_embedding.pt",))
    r = fetch_cli(hub_world, "tiny-dflash", "--lock", lock)
    assert r.returncode == 2
    line = one_line_error(r.stderr)
    snapshot = hub_world["hub"] / f"models--{REPO_DF.replace('/', '--')}" / "snapshots" / REV
    assert "mask_embedding.pt" in line and f"convert_hf_to_gguf.py {snapshot} --target-model-dir" in line
    assert "--outtype bf16" in line
    assert not converted_path(lockfile.load(lock).get("tiny-dflash")).exists()


def test_zlab_config_round_trips_the_card_layout():
    """The helper's config says what the card says (HF numbering is llama.cpp's - 1)."""
    card = CARDS[JUNE]
    cfg = zlab_config(card)
    assert cfg["dflash_config"] == {"mask_token_id": 248077, "target_layer_ids": [1, 6, 11, 16, 22, 27, 32, 37]}
    assert cfg["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"],
            cfg["intermediate_size"], cfg["hidden_size"], cfg["sliding_window"], cfg["block_size"]) == \
        (6, 32, 8, 128, 6144, 2048, 4096, 16)
    assert zlab_config(CARDS[APRIL])["dflash_config"]["mask_token_id"] == 248070
