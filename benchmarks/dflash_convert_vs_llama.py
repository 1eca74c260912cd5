"""specsweep's in-process DFlash converter against llama.cpp's own convert_hf_to_gguf.py, side by side.

    python benchmarks/dflash_convert_vs_llama.py --llama-cpp DIR --python VENV_PYTHON [--work DIR]

DIR is a llama.cpp source tree (the one llama-cpp-python vendors); VENV_PYTHON a Python with what
llama.cpp's converter needs (torch, transformers, sentencepiece; requirements/requirements-convert_hf_to_gguf.txt).
For both tiny DFlash cards it writes the synth drafter as a z-lab checkpoint (tests/dflash_checkpoint.py),
a target model directory (config.json of a Qwen3.5-MoE and a tokenizer.json of the card's family
vocabulary), runs llama.cpp's converter on them (the pre-tokenizer hash of this made-up tokenizer is
unknown to llama.cpp, so it is named `qwen35`), converts the same checkpoint in process with the
tokenizer taken from the synth target GGUF, and prints every metadata key and tensor where the two
files differ. Exit status 1 when any does. The key lists in tests/test_dflash_convert.py come from
this comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

from specsweep.models.dflash_convert import convert
from specsweep.synth.cards import CARDS
from specsweep.synth.vocab import CHATML_TEMPLATE, family_vocab
from specsweep.synth.writer import Recipe, write_model
from tests.dflash_checkpoint import write_checkpoint

RUN_LLAMA = """
import sys, runpy
sys.path.insert(0, {src!r})
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen35"
sys.argv = ["convert_hf_to_gguf.py", {ckpt!r}, "--target-model-dir", {target!r}, "--outfile", {out!r}]
runpy.run_path({src!r} + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def target_dir(card, path: Path) -> Path:
    """A Hugging Face target directory whose tokenizer is the synth family vocabulary."""
    v = family_vocab(card.family, card.n_vocab)
    first_special = v.types.index(3)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
        "text_config": {"rope_parameters": {"mrope_section": [11, 11, 10], "rope_theta": 10000000,
                                            "rope_type": "default", "mrope_interleaved": True}}}))
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": first_special + i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, t in enumerate(v.tokens[first_special:first_special + 3])],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(v.tokens[:first_special])},
                  "merges": [m.split(" ") for m in v.merges]},
    }
    (path / "tokenizer.json").write_text(json.dumps(tokenizer))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": v.tokens[v.eos_id],
        "pad_token": v.tokens[v.pad_id], "add_bos_token": False, "chat_template": CHATML_TEMPLATE}))
    return path


def fields(path: Path) -> dict:
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def compare(name: str, ours: Path, theirs: Path) -> int:
    a, b = fields(ours), fields(theirs)
    bad = 0
    for k in sorted(set(a) | set(b)):
        if k.startswith("tokenizer.") and k != "tokenizer.ggml.mask_token_id":
            continue  # from the synth target GGUF here, from the made-up HF tokenizer there
        if k not in a or k not in b or a[k] != b[k]:
            bad += 1
            print(f"{name}: key {k}: ours {a.get(k, '<absent>')!r:.80} llama.cpp {b.get(k, '<absent>')!r:.80}")
    ta = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    for n in sorted(set(ta) | set(tb)):
        x, y = ta.get(n), tb.get(n)
        if x is None or y is None:
            bad += 1
            print(f"{name}: tensor {n} only in {'llama.cpp' if x is None else 'ours'}")
        elif (x.tensor_type, list(x.shape)) != (y.tensor_type, list(y.shape)) or \
                not np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8)):
            bad += 1
            print(f"{name}: tensor {n}: ours {x.tensor_type.name} {list(x.shape)}, "
                  f"llama.cpp {y.tensor_type.name} {list(y.shape)} (or the bytes differ)")
    print(f"{name}: {len(b)} keys, {len(tb)} tensors, {bad} differences; llama.cpp's keys: {sorted(b)}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-cpp", required=True, type=Path)
    ap.add_argument("--python", required=True)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dflash-vs-llama-"))
    work.mkdir(parents=True, exist_ok=True)
    bad = 0
    for name in ("qwen3.6-35b-a3b-dflash", "qwen3.6-35b-a3b-dflash-jun26"):
        card = CARDS[name].at_scale("tiny")
        synth = work / f"{name}.gguf"
        write_model(Recipe(card, "tiny", "F16"), synth)
        target_card = CARDS[CARDS[name].target].at_scale("tiny")
        target_gguf = work / f"{CARDS[name].target}.gguf"
        write_model(Recipe(target_card, "tiny", "Q4_0"), target_gguf)
        for dtype in ("BF16", "F16"):
            ckpt = write_checkpoint(synth, card, work / f"{name}-{dtype}" / "Qwen3.6-35B-A3B-DFlash", dtype)
            theirs = work / f"{name}-{dtype}-llama.gguf"
            code = RUN_LLAMA.format(src=str(args.llama_cpp.resolve()), ckpt=str(ckpt),
                                    target=str(target_dir(target_card, work / "target")), out=str(theirs))
            subprocess.run([args.python, "-c", code], check=True)
            ours = work / f"{name}-{dtype}-ours.gguf"
            convert(ckpt, target_gguf, ours)
            bad += compare(f"{name} {dtype}", ours, theirs)
    print(f"work files in {work}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
