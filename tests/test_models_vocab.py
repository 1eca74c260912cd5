"""Draft/target vocabulary checks from GGUF headers, with llama.cpp's rules
(common_speculative_are_compatible): equal vocabularies pass, a size difference over 128 or a
differing token text is refused with one line naming both models, the first differing token and a
draft that would work."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from pathlib import Path

import gguf
import pytest
from specsweep.errors import SpecsweepError
from specsweep.models.vocab_match import check_pair, fingerprint, read_vocab
from specsweep.synth.cards import CARDS
from specsweep.synth.vocab import family_vocab
from specsweep.synth.writer import Recipe, write_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    out = {}

    def make(key, card, **changes):
        c = dataclasses.replace(CARDS[card].at_scale("tiny"), **changes)
        out[key] = d / f"{key}.gguf"
        write_model(Recipe(c, "tiny", "Q4_0"), out[key])

    make("a3b", "qwen3.6-35b-a3b")  # qwen35 family, 2048 tokens
    make("d08", "qwen3.5-0.8b")  # qwen35 family, 2048 tokens: vocab-matched
    make("q06", "qwen3-0.6b")  # qwen3 family, 1536 tokens
    make("d08_plus64", "qwen3.5-0.8b", n_vocab=2048 + 64)
    make("d08_plus200", "qwen3.5-0.8b", n_vocab=2048 + 200)
    # same size, one token's text changed in place (same length, so the file stays a valid GGUF)
    data = out["d08"].read_bytes()
    assert data.count(b"[PAD1500]") == 1
    out["d08_text"] = d / "d08_text.gguf"
    out["d08_text"].write_bytes(data.replace(b"[PAD1500]", b"[PAX1500]"))
    return out


def header_only(path: Path, tokens, tokenizer="gpt2", pre="qwen35", bos=None, eos=None, add_bos=None) -> Path:
    """A GGUF with a tokenizer section and no tensors: all check_pair ever reads."""
    w = gguf.GGUFWriter(path, "qwen3")
    w.add_tokenizer_model(tokenizer)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(list(tokens))
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def refusal(*args) -> str:
    with pytest.raises(SpecsweepError) as e:
        check_pair(*args)
    msg = e.value.message
    assert "\n" not in msg
    return msg


def test_equal_vocabularies_pass(models):
    r = check_pair("a3b", models["a3b"], "d08", models["d08"])
    assert r.warnings == ()
    assert fingerprint(r.target) == fingerprint(r.draft)
    assert r.target.n_tokens == 2048 and r.target.bos == 714 and r.target.eos == 716 and not r.target.add_bos


def test_wrong_family_is_refused_naming_both_the_token_and_a_draft(models):
    msg = refusal("a3b", models["a3b"], "q06", models["q06"])
    assert msg.startswith("draft q06 cannot speculate for target a3b:")
    assert "2048 (target) and 1536 (draft) differ by 512 tokens (llama.cpp allows 128)" in msg
    assert "first differing token: id 1536 is '[PAD1536]' in the target, (no such token) in the draft" in msg
    assert 'synth = "qwen3.5-0.8b", scale = "tiny"' in msg


def test_same_size_different_text_is_refused(models):
    msg = refusal("a3b", models["a3b"], "d08_text", models["d08_text"])
    assert "token texts differ" in msg
    assert "id 1500 is '[PAD1500]' in the target, '[PAX1500]' in the draft" in msg
    assert read_vocab(models["d08_text"], "x").tokens_sha256 != read_vocab(models["d08"], "x").tokens_sha256


def test_llama_cpp_size_tolerance_is_128(models):
    ok = check_pair("a3b", models["a3b"], "d08_plus64", models["d08_plus64"])
    assert any("differ by 64 tokens" in w for w in ok.warnings)
    msg = refusal("a3b", models["a3b"], "d08_plus200", models["d08_plus200"])
    assert "differ by 200 tokens" in msg and "id 2048 is (no such token) in the target, '[PAD2048]'" in msg


def test_the_published_failure_at_full_vocabulary_size(tmp_path):
    """qwen3:0.6b (151936 tokens) as draft for a 248320-token Qwen3.6 target; the suggestion comes
    from the shipped models.lock."""
    v35, v3 = family_vocab("qwen35", 248320), family_vocab("qwen3", 151936)
    target = header_only(tmp_path / "t.gguf", v35.tokens, pre=v35.pre, bos=v35.bos_id, eos=v35.eos_id, add_bos=False)
    draft = header_only(tmp_path / "d.gguf", v3.tokens, pre=v3.pre, bos=v3.bos_id, eos=v3.eos_id, add_bos=False)
    msg = refusal("qwen3.6-35b-a3b-ud-q4_k_xl", target, "qwen3:0.6b", draft)
    assert "draft qwen3:0.6b cannot speculate for target qwen3.6-35b-a3b-ud-q4_k_xl" in msg
    assert "248320 (target) and 151936 (draft) differ by 96384 tokens" in msg
    assert "first differing token: id 151936" in msg
    assert "models.lock qwen3.5-0.8b-q4_k_m" in msg


def test_tokenizer_type_and_bos_rules(tmp_path):
    tokens = [f"t{i}" for i in range(300)]
    gpt2 = header_only(tmp_path / "a.gguf", tokens, bos=1, add_bos=True)
    assert "tokenizer types differ (target BPE 'gpt2', draft SPM 'llama')" in refusal(
        "t", gpt2, "d", header_only(tmp_path / "b.gguf", tokens, tokenizer="llama", pre=None))
    assert "BOS differs (target add_bos=True id 1, draft add_bos=True id 2)" in refusal(
        "t", gpt2, "d", header_only(tmp_path / "c.gguf", tokens, bos=2, add_bos=True))
    # BOS ids are compared only when BOS is added, as llama.cpp does; the difference is a warning
    t = header_only(tmp_path / "e.gguf", tokens, bos=1, add_bos=False)
    r = check_pair("t", t, "d", header_only(tmp_path / "f.gguf", tokens, bos=2, add_bos=False))
    assert any("BOS ids differ" in w for w in r.warnings)
    # ids 0..4 are not compared (SPEC_VOCAB_CHECK_START_TOKEN_ID = 5)
    other = ["x0"] + tokens[1:]
    check_pair("t", t, "d", header_only(tmp_path / "g.gguf", other, bos=1, add_bos=False))


def test_fingerprint_definition(tmp_path):
    tokens = ["a", "bc", "<|im_end|>", "[PAD3]"]
    v = read_vocab(header_only(tmp_path / "v.gguf", tokens, bos=0, eos=2), "v")
    h = hashlib.sha256(b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in tokens)).hexdigest()
    assert fingerprint(v) == {"tokenizer": "gpt2", "pre": "qwen35", "n_tokens": 4, "tokens_sha256": h,
                              "bos": 0, "eos": 2, "add_bos": False, "add_eos": False}


def test_truncated_and_corrupt_files_name_the_model(models, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(models["d08"].read_bytes()[: models["d08"].stat().st_size // 2])
    msg = refusal("a3b", models["a3b"], "half-draft", cut)
    assert msg.startswith("model half-draft:") and "truncated or corrupt" in msg
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 10)
    assert refusal("junk-target", junk, "d08", models["d08"]).startswith("model junk-target:")
    assert "file not found" in refusal("a3b", models["a3b"], "gone", tmp_path / "missing.gguf")
