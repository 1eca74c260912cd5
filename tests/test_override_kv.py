"""`override_kv`: llama.cpp's --override-kv per model. Parsing with llama.cpp's limits and wording,
where it is written (matrix [models], models.lock), what the header-only vocabulary check sees,
what llama.cpp itself loads, the three vocabulary outcomes in `specsweep check` and `run`, and
parity with `llama-speculative-simple --override-kv`."""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import llama_cpp as ll
import pytest
from click.testing import CliRunner
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

from specsweep.cli import main
from specsweep.engine import runtime
from specsweep.engine.drafters import DraftModel
from specsweep.engine.native import run_speculative_simple
from specsweep.engine.speculative import run_trial
from specsweep.errors import SpecsweepError
from specsweep.matrix.load import load
from specsweep.matrix.models import ModelRef, model_overrides, parse_models
from specsweep.models import lockfile
from specsweep.models.fit import native_bin
from specsweep.models.overrides import parse_override, parse_overrides, to_llama
from specsweep.models.vocab_match import (AFTER_OVERRIDE, COMPATIBLE, REFUSED, VocabRefused, check_pair, fingerprint,
                                          pair_check, read_vocab)

ROOT = Path(__file__).resolve().parent.parent
TOOL = native_bin() / "llama-speculative-simple"
CARD = "qwen3-30b-a3b"  # tiny: 1536 tokens, BOS <|endoftext|> = 714
BOS = 714
FIX = f"tokenizer.ggml.bos_token_id=int:{BOS}"
ADD_BOS = "tokenizer.ggml.add_bos_token"


# ----------------------------------------------------------------------------------------------
# parsing: llama.cpp's string_parse_kv_override, its limits and its wording


def test_each_type_parses_as_llama_cpp_reads_it():
    assert parse_override("a.b=int:-42").value == -42
    assert parse_override("a.b=float:1e-6").value == 1e-6
    assert parse_override("a.b=bool:false").value is False
    assert parse_override("x=str:a=b,c:d").value == "a=b,c:d"  # the first '=' splits; a comma is the value's
    o = parse_override(f"{'k' * 127}=str:{'v' * 127}")  # char key[128] and val_str[128], NUL-terminated
    assert (len(o.key), len(o.value), o.type) == (127, 127, "str")
    assert parse_override("k=str:").value == ""


@pytest.mark.parametrize("text, expected", [
    ("tokenizer.ggml.bos_token_id", "malformed KV override 'tokenizer.ggml.bos_token_id': no '='"),
    ("=int:1", "empty key"),
    (f"{'k' * 128}=int:1", "the key is 128 bytes, llama.cpp allows 127"),
    ("k=long:1", "invalid type for KV override 'k=long:1'"),
    ("k=int5", "invalid type for KV override 'k=int5'"),
    ("k=INT:5", "invalid type"),  # llama.cpp's prefixes are lower case
    ("k=int:12abc", "invalid integer value"),  # llama.cpp's atol would read 12
    ("k=int:", "invalid integer value"),
    (f"k=int:{2**63}", "fits int64"),
    ("k=float:fast", "invalid float value"),
    ("k=bool:True", "invalid boolean value for KV override 'k=bool:True'"),
    (f"k=str:{'é' * 64}", "value cannot exceed 127 chars (it has 128 bytes)"),  # bytes, not characters
    ("k=str:a\0b", "NUL"),
])
def test_malformed_overrides_are_one_line_errors(text, expected):
    with pytest.raises(SpecsweepError) as e:
        parse_override(text)
    assert expected in e.value.message and "\n" not in e.value.message


def test_a_list_names_its_model_and_refuses_a_key_set_twice():
    with pytest.raises(SpecsweepError, match=r"^m \[models\] d: override_kv: invalid type"):
        parse_overrides(["k=num:1"], "m [models] d")
    with pytest.raises(SpecsweepError, match="sets k twice"):
        parse_overrides(["k=int:1", "k=int:2"], "d")
    with pytest.raises(SpecsweepError, match="must be a list"):
        parse_overrides("k=int:1", "d")


def test_the_llama_cpp_array_is_terminated_by_an_empty_key():
    arr = to_llama(parse_overrides(["a=int:-3", "b=float:0.5", "c=bool:true", "d=str:hi"], "m"))
    assert len(arr) == 5 and arr[4].key == b""
    assert [(x.key, x.tag) for x in arr[:4]] == [(b"a", ll.LLAMA_KV_OVERRIDE_TYPE_INT),
                                                 (b"b", ll.LLAMA_KV_OVERRIDE_TYPE_FLOAT),
                                                 (b"c", ll.LLAMA_KV_OVERRIDE_TYPE_BOOL),
                                                 (b"d", ll.LLAMA_KV_OVERRIDE_TYPE_STR)]
    assert (arr[0].value.val_i64, arr[1].value.val_f64, arr[2].value.val_bool, arr[3].value.val_str) == \
        (-3, 0.5, True, b"hi")
    # the C layout: int tag, char key[128], then the 8-byte-aligned union of 128 bytes
    assert ctypes.sizeof(ll.llama_model_kv_override) == 264


# ----------------------------------------------------------------------------------------------
# where overrides are written: matrix [models] and models.lock


def test_identity_is_unchanged_without_overrides_and_changed_with_them(tmp_path):
    refs = parse_models({
        "a": "x", "b": {"lock": "x"}, "c": {"lock": "x", "override_kv": []},
        "d": {"lock": "x", "override_kv": ["k=int:1", "j=bool:true"]},
        "e": {"lock": "x", "override_kv": ["j=bool:true", "k=int:1"]},
        "p": {"path": "m.gguf"}, "q": {"path": "m.gguf", "override_kv": ["k=int:1"]},
        "s": {"synth": CARD, "scale": "tiny"}, "t": {"synth": CARD, "scale": "tiny", "override_kv": ["k=int:1"]},
    }, tmp_path / "m.toml")
    assert refs["a"].identity == refs["b"].identity == refs["c"].identity == {"lock": "x"}
    assert refs["d"].identity == refs["e"].identity == {"lock": "x", "override_kv": ("j=bool:true", "k=int:1")}
    assert refs["p"].identity == {"path": "m.gguf"} and refs["q"].identity["override_kv"] == ("k=int:1",)
    assert refs["s"].identity == {"synth": CARD, "scale": "tiny"}
    assert refs["t"].override_kv == ("k=int:1",) and refs["t"].describe() == refs["s"].describe()
    # the synthetic file is the same: overrides apply when it loads
    from specsweep.matrix.models import resolve
    assert resolve(refs["s"], tmp_path / "m.toml", create=False) == resolve(refs["t"], tmp_path / "m.toml", create=False)


def test_cells_with_overrides_are_new_cells(tmp_path):
    head = f"""
name = "o"
[models]
tgt = {{ synth = "{CARD}", scale = "tiny" }}
a = {{ synth = "{CARD}", scale = "tiny", seed = 1 }}
b = {{ synth = "{CARD}", scale = "tiny", seed = 1, override_kv = ["{FIX}"] }}
[defaults]
target = "tgt"
gpus = []
[[cell]]
method = "draft"
draft = ["a", "b"]
"""
    path = tmp_path / "o.toml"
    path.write_text(head)
    a, b = load(path).cells
    assert a.id != b.id and a.reference_key() == b.reference_key()  # same target: same reference


def lock_with(tmp_path, extra: str) -> Path:
    path = tmp_path / "models.lock"
    path.write_text(f"""version = 1

[[model]]
name = "d"
role = "draft"
repo = "o/r"
revision = "main"
file = "D.gguf"
{extra}
unverified = ["file", "revision", "sha256", "size", "vocab"]
""")
    return path


def test_lock_entries_carry_overrides_and_the_matrix_adds_to_them(tmp_path):
    path = lock_with(tmp_path, f'vocab = {{ tokenizer = "gpt2", n_tokens = 9, defaulted = ["bos"] }}\n'
                               f'override_kv = ["{FIX}", "{ADD_BOS}=bool:false"]')
    lock = lockfile.load(path)
    assert lock.get("d").override_kv == (FIX, f"{ADD_BOS}=bool:false")
    assert lockfile.parse(lockfile.dump(lock), path) == lock
    refs = parse_models({"plain": "d", "more": {"lock": "d", "override_kv": [f"{ADD_BOS}=bool:true", "x=int:1"]}},
                        tmp_path / "m.toml")
    assert model_overrides(refs["plain"], path) == (FIX, f"{ADD_BOS}=bool:false")
    assert model_overrides(refs["more"], path) == (FIX, f"{ADD_BOS}=bool:true", "x=int:1")  # the matrix's wins
    assert model_overrides(ModelRef.locked("d"), path) == (FIX, f"{ADD_BOS}=bool:false")
    with pytest.raises(SpecsweepError, match=r"model d: override_kv: invalid boolean value"):
        lockfile.load(lock_with(tmp_path, f'override_kv = ["{ADD_BOS}=bool:yes"]'))
    with pytest.raises(SpecsweepError, match="vocab defaulted lists special tokens among bos, eos"):
        lockfile.load(lock_with(tmp_path, 'vocab = { tokenizer = "gpt2", n_tokens = 9, defaulted = ["pad"] }'))


def test_the_shipped_lock_records_the_missing_bos_of_the_qwen_draft():
    e = lockfile.load(ROOT / "models.lock").get("qwen3.5-0.8b-q4_k_m")
    assert e.vocab["defaulted"] == ["bos"] and e.vocab["bos"] == 11 and e.vocab["add_bos"] is False
    assert "tokenizer.ggml.bos_token_id=int:248044" in e.note and e.override_kv == ()


# ----------------------------------------------------------------------------------------------
# stand-ins: the synth factory's files with a changed tokenizer section


def restamp(src: Path, dst: Path, add_bos: bool, drop_bos: bool = False, bos: int | None = None) -> Path:
    """`src` with tokenizer.ggml.add_bos_token set, and its bos_token_id dropped or changed."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.fields["general.architecture"].contents(), endianess=reader.endianess)
    new = {ADD_BOS: MetadataDetails(gguf.GGUFValueType.BOOL, add_bos)}
    if bos is not None:
        new["tokenizer.ggml.bos_token_id"] = MetadataDetails(gguf.GGUFValueType.UINT32, bos)
    copy_with_new_metadata(reader, writer, new, ["tokenizer.ggml.bos_token_id"] if drop_bos else [])
    return dst


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """target: the tiny card with add_bos = true (BOS 714 in the file); draft: the card perturbed,
    add_bos = true and no bos_token_id (llama.cpp: BPE's 11); other: add_bos = true, BOS 715 in the file;
    qwen_draft: like unsloth's Qwen3.5-0.8B GGUF, add_bos = false and no bos_token_id."""
    from specsweep.synth.cards import CARDS
    from specsweep.synth.writer import Recipe, write_model

    d = tmp_path_factory.mktemp("override_kv")
    runtime.init(verbose=False)
    base_t, base_d = d / "base_t.gguf", d / "base_d.gguf"
    write_model(Recipe(CARDS[CARD].at_scale("tiny"), "tiny", "Q4_0"), base_t)
    write_model(Recipe(CARDS[CARD].at_scale("tiny"), "tiny", "Q4_0", perturb=0.2), base_d)
    return {"target": restamp(base_t, d / "target.gguf", True),
            "draft": restamp(base_d, d / "draft.gguf", True, drop_bos=True),
            "other": restamp(base_d, d / "other.gguf", True, bos=715),
            "plain_target": base_t,
            "qwen_draft": restamp(base_d, d / "qwen_draft.gguf", False, drop_bos=True)}


def test_the_draft_without_a_bos_id_is_refused_naming_the_fix(stand_ins):
    d = read_vocab(stand_ins["draft"], "d")
    assert (d.add_bos, d.bos, d.defaulted >= {"bos"}) == (True, 11, True)
    assert fingerprint(d)["defaulted"] == ["bos"]
    with pytest.raises(VocabRefused) as e:
        check_pair("t", stand_ins["target"], "d", stand_ins["draft"])
    msg = e.value.message
    assert "\n" not in msg and msg.startswith("draft d cannot speculate for target t: BOS differs")
    assert ("target add_bos=True id 714, draft add_bos=True id 11 [llama.cpp's BPE default: the file has no valid "
            "tokenizer.ggml.bos_token_id])") in msg
    assert f'fix: give draft d override_kv = ["{FIX}"] (llama.cpp: --override-kv {FIX}' in msg
    assert e.value.check.outcome == REFUSED and e.value.check.fix == (("draft", FIX),)


def test_the_override_makes_it_compatible_after_an_override(stand_ins):
    c = check_pair("t", stand_ins["target"], "d", stand_ins["draft"], draft_overrides=[FIX])
    assert c.outcome == AFTER_OVERRIDE and c.draft.bos == BOS and "bos" not in c.draft.defaulted
    assert c.as_files.startswith("BOS differs") and f'with draft d override_kv = ["{FIX}"]' in c.line()
    # llama.cpp's one list for both models does the same: the target already has 714
    assert check_pair("t", stand_ins["target"], "d", stand_ins["draft"], target_overrides=[FIX],
                      draft_overrides=[FIX]).outcome == AFTER_OVERRIDE
    # an override that changes nothing the gate reads leaves the pair as the files decide
    assert check_pair("t", stand_ins["target"], "t2", stand_ins["target"], draft_overrides=[FIX]).outcome == COMPATIBLE


def test_ids_both_files_set_are_refused_without_an_override_fix(stand_ins):
    c = pair_check("t", stand_ins["target"], "o", stand_ins["other"])
    assert c.outcome == REFUSED and c.fix == () and "draft add_bos=True id 715)" in c.reason
    assert "fix:" not in c.message and "use a draft" in c.message
    # overriding it anyway is the user's call, and makes it pass
    assert pair_check("t", stand_ins["target"], "o", stand_ins["other"],
                      draft_overrides=[FIX]).outcome == AFTER_OVERRIDE


def test_an_add_bos_flag_left_to_the_default_is_fixed_too(stand_ins, tmp_path):
    """target add_bos from its file; the draft's add_bos and BOS id both llama.cpp's defaults
    (false, 11): two lines, the flag first, as llama.cpp's gate checks them."""
    bare = tmp_path / "bare.gguf"
    reader = gguf.GGUFReader(stand_ins["draft"])
    copy_with_new_metadata(reader, gguf.GGUFWriter(bare, arch=reader.fields["general.architecture"].contents()),
                           {}, [ADD_BOS])
    c = pair_check("t", stand_ins["target"], "d", bare)
    assert c.outcome == REFUSED and c.fix == (("draft", f"{ADD_BOS}=bool:true"), ("draft", FIX))
    assert "draft add_bos=False [default: the file has no tokenizer.ggml.add_bos_token] id 11 [" in c.reason
    assert pair_check("t", stand_ins["target"], "d", bare, draft_overrides=[line for _, line in c.fix]).outcome \
        == AFTER_OVERRIDE


def test_the_qwen_case_passes_this_llama_cpp_with_the_fix_as_a_note(stand_ins):
    """add_bos false on both sides: this llama.cpp does not compare BOS ids (unsloth's Qwen3.5-0.8B)."""
    c = check_pair("t", stand_ins["plain_target"], "q", stand_ins["qwen_draft"])
    assert c.outcome == COMPATIBLE
    note = next(w for w in c.warnings if w.startswith("BOS ids differ"))
    assert "target 714, draft 11 [llama.cpp's BPE default" in note and f'draft override_kv = ["{FIX}"] aligns them' in note


def test_an_override_llama_cpp_would_ignore_is_refused(stand_ins):
    with pytest.raises(SpecsweepError, match="llama.cpp reads tokenizer.ggml.bos_token_id as int"):
        check_pair("t", stand_ins["target"], "d", stand_ins["draft"],
                   draft_overrides=["tokenizer.ggml.bos_token_id=str:714"])
    with pytest.raises(SpecsweepError, match="tokenizer.ggml.tokens is an array"):
        read_vocab(stand_ins["draft"], "d", ["tokenizer.ggml.tokens=str:x"])


# ----------------------------------------------------------------------------------------------
# what llama.cpp loads


def test_llama_cpp_loads_the_overridden_bos(stand_ins):
    with runtime.Model(stand_ins["draft"], (), vocab_only=True) as m:
        assert (ll.llama_vocab_bos(m.vocab), ll.llama_vocab_get_add_bos(m.vocab)) == (11, True)
    with runtime.Model(stand_ins["draft"], (), vocab_only=True, override_kv=[FIX, f"{ADD_BOS}=bool:false"]) as m:
        assert (ll.llama_vocab_bos(m.vocab), ll.llama_vocab_get_add_bos(m.vocab)) == (BOS, False)
        assert m.override_kv == (FIX, f"{ADD_BOS}=bool:false")
    # the header check agrees with llama.cpp on both
    v = read_vocab(stand_ins["draft"], "d", [FIX, f"{ADD_BOS}=bool:false"])
    assert (v.bos, v.add_bos) == (BOS, False)


def test_a_wrongly_typed_override_is_not_silently_ignored(stand_ins):
    with pytest.raises(SpecsweepError, match="ignored by llama.cpp: Bad metadata override type for key "
                                             "'tokenizer.ggml.bos_token_id', expected int but got float"):
        runtime.Model(stand_ins["draft"], (), vocab_only=True, override_kv=["tokenizer.ggml.bos_token_id=float:714"])
    with pytest.raises(SpecsweepError, match="invalid type"):
        runtime.Model(stand_ins["draft"], (), vocab_only=True, override_kv=["k=num:1"])


# ----------------------------------------------------------------------------------------------
# the CLI: `specsweep check` outcome lines, `run` refusals, malformed overrides


def matrix(tmp_path, stand_ins, drafts: str, extra_models: str = "") -> Path:
    path = tmp_path / "ov.toml"
    path.write_text(f"""
name = "ov"
design = "sequential"  # drafts without a baseline: the blocks design would refuse them
[models]
t = {{ path = "{stand_ins['target']}" }}
d = {{ path = "{stand_ins['draft']}" }}
fixed = {{ path = "{stand_ins['draft']}", override_kv = ["{FIX}"] }}
{extra_models}
[defaults]
target = "t"
gpus = []
n_ctx = 256
n_predict = 4
trials = 1
warmup = 0
[[cell]]
method = "draft"
draft = {drafts}
""")
    return path


def test_check_names_each_outcome_and_the_fix(tmp_path, stand_ins, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    out = CliRunner().invoke(main, ["check", str(matrix(tmp_path, stand_ins, '["d", "fixed"]'))])
    assert out.exit_code == 2
    lines = out.output.splitlines()
    assert "fit d -> t (draft): REFUSED" in lines
    refused = next(x for x in lines if x.startswith("vocab d -> t (draft): "))
    assert refused.startswith("vocab d -> t (draft): refused: BOS differs (target add_bos=True id 714")
    assert refused.endswith(f'fix: give draft d override_kv = ["{FIX}"] (llama.cpp: --override-kv {FIX}, '
                            f'which applies to both models)')
    assert "fit fixed -> t (draft): ok" in lines
    fixed = next(x for x in lines if x.startswith("vocab fixed -> t (draft): "))
    assert fixed.startswith("vocab fixed -> t (draft): compatible after an override (as the files are: BOS differs")
    assert lines[-1].startswith("specsweep: error: draft d cannot speculate for target t: BOS differs")
    ok = CliRunner().invoke(main, ["check", str(matrix(tmp_path, stand_ins, '"t"'))])
    assert ok.exit_code == 0 and "vocab t -> t (draft): compatible" in ok.output.splitlines()


def test_run_refuses_with_the_fix_in_one_line(tmp_path, stand_ins, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", str(matrix(tmp_path, stand_ins, '"d"')), "--results", str(results)])
    assert out.exit_code == 2
    err = out.output.strip().splitlines()[-1]
    assert err.startswith("specsweep: error: draft d cannot speculate for target t") and f"--override-kv {FIX}" in err
    assert not list(results.rglob("trials*.jsonl"))


@pytest.mark.parametrize("override, expected", [
    ("tokenizer.ggml.bos_token_id", "no '='"),
    ("=int:1", "empty key"),
    (f"{'k' * 128}=int:1", "llama.cpp allows 127"),
    ("k=num:1", "invalid type"),
    ("k=int:one", "invalid integer value"),
    ("k=bool:yes", "invalid boolean value"),
    (f"k=str:{'x' * 128}", "value cannot exceed 127 chars"),
])
def test_malformed_overrides_exit_2_with_one_line(tmp_path, stand_ins, override, expected):
    path = matrix(tmp_path, stand_ins, '"bad"', f'bad = {{ path = "{stand_ins["draft"]}", override_kv = ["{override}"] }}')
    out = CliRunner().invoke(main, ["check", str(path)])
    assert out.exit_code == 2
    assert out.output.count("\n") == 1 and out.output.startswith(f"specsweep: error: {path} [models] bad: override_kv: ")
    assert expected in out.output


# ----------------------------------------------------------------------------------------------
# parity with llama.cpp's own tool


N_PREDICT, N_CTX, N_BATCH, THREADS = 64, 1024, 512, 2  # as tests/test_parity.py
TEXT = "The quick brown fox jumps over the lazy dog. def main(argv=None):"


@pytest.mark.skipif(not TOOL.is_file(), reason=f"native llama-speculative-simple not built ({TOOL})")
def test_parity_with_llama_speculative_simple_override_kv(stand_ins):
    """llama.cpp refuses the pair as the files are; with --override-kv (both models) it runs, and
    specsweep's loop with the same list on both models generates the same text and drafts and
    accepts as many tokens."""
    cmd = [str(TOOL), "-m", str(stand_ins["target"]), "-md", str(stand_ins["draft"]), "-p", TEXT,
           "-n", str(N_PREDICT), "--temp", "0", "-c", str(N_CTX), "-b", str(N_BATCH), "-ub", str(N_BATCH),
           "-t", str(THREADS), "-fa", "on", "-ctk", "f16", "-ctv", "f16", "-ngl", "0", "-ngld", "0",
           "--spec-type", "draft-simple", "--spec-draft-n-max", "5", "--spec-draft-n-min", "0"]
    with pytest.raises(RuntimeError, match=r"bos tokens must match target model .* add: 1 - 1, id: 714 - 11"):
        run_speculative_simple(cmd, tries=1)  # what the header check says: refused, draft BOS 11
    native = run_speculative_simple(cmd + ["--override-kv", FIX])

    opts = runtime.ContextOptions(n_ctx=N_CTX, n_batch=N_BATCH, type_kv="f16", flash_attn=True, n_threads=THREADS)
    with runtime.Model(stand_ins["target"], (), override_kv=[FIX]) as model, \
            runtime.Model(stand_ins["draft"], (), override_kv=[FIX]) as dmodel, \
            runtime.Context(model, opts) as ctx, runtime.Context(dmodel, opts) as dctx:
        assert ll.llama_vocab_get_add_bos(model.vocab) and ll.llama_vocab_bos(dmodel.vocab) == BOS
        # as common_tokenize(..., add_special = true): the BOS llama.cpp adds, then the text
        data = TEXT.encode()
        buf = (ll.llama_token * (len(data) + 16))()
        n = ll.llama_tokenize(model.vocab, data, len(data), buf, len(buf), True, True)
        tokens = list(buf[:n])
        assert tokens[0] == BOS
        result = run_trial(ctx, tokens, N_PREDICT, DraftModel(dctx, n_max=5, n_min=0))
        text = b"".join(model.piece_bytes(t) for t in tokens)
        text += b"".join(model.piece_bytes(t) for t in result.tokens if not model.is_eog(t))
    assert native.stdout.startswith(b"\n\n" + text), "generated text differs"
    assert native.stdout[len(text) + 2:].strip(b"\n") == b"", "llama.cpp generated more"
    assert native.stats["n_predict"] == len(result.tokens)
    assert (native.stats["n_drafted"], native.stats["n_accept"]) == (result.n_drafted_llama, result.n_accepted_llama)
    assert result.n_accepted_llama > 0
