"""Can this draft speculate for that target? llama.cpp's vocabulary check, from GGUF headers alone.

`check_pair` applies the rules of `common_speculative_are_compatible` (llama.cpp
common/speculative.cpp, the vendored copy in llama-cpp-python 0.3.36) before anything loads, in its
order, and refuses with one line that names both models, the rule, the first differing token and a
draft that would work:

1. the vocabulary type (SPM, BPE, WPM, UGM, RWKV, ... from `tokenizer.ggml.model`) must match;
2. `add_bos` must match, and when it is set the BOS ids must match;
3. `add_eos` likewise, with the EOS ids;
4. the token counts may differ by at most 128 (SPEC_VOCAB_MAX_SIZE_DIFFERENCE);
5. the token texts must be equal byte for byte (strcmp) for every id from 5
   (SPEC_VOCAB_CHECK_START_TOKEN_ID) up to the smaller count.

add_bos/add_eos and the BOS/EOS ids are resolved as llama-vocab.cpp does: defaults by tokenizer type
and pre-tokenizer, then the GGUF keys. Differences llama.cpp tolerates (pre-tokenizer, EOT/PAD
ids, a size difference within 128) come back as warnings.

The vocabulary fingerprint recorded in models.lock is `fingerprint(read_vocab(path))`: tokenizer
model, pre-tokenizer, token count, BOS/EOS and add flags, and `tokens_sha256`, the sha256 of every
token text in id order, each as a 4-byte little-endian length and its bytes.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models.header import field as header_field
from specsweep.models.header import open_gguf, string_array

SPEC_VOCAB_MAX_SIZE_DIFFERENCE = 128
SPEC_VOCAB_CHECK_START_TOKEN_ID = 5

# tokenizer.ggml.model -> llama_vocab_type (llama-vocab.cpp, llama_vocab::impl::load)
_VOCAB_TYPE = {"no_vocab": "NONE", "none": "NONE", "llama": "SPM", "bert": "WPM", "gpt2": "BPE",
               "hybriddna": "BPE", "whitespace": "BPE", "gemma4": "BPE", "t5": "UGM", "rwkv": "RWKV",
               "test": "TEST", "plamo2": "PLAMO2"}
# default BOS/EOS ids per tokenizer model, before the GGUF keys
_DEFAULT_BOS_EOS = {"no_vocab": (None, None), "none": (None, None), "llama": (1, 2), "bert": (101, None),
                    "gpt2": (11, 11), "hybriddna": (11, 11), "whitespace": (11, 11), "gemma4": (None, None),
                    "t5": (None, 1), "rwkv": (None, None), "test": (None, None), "plamo2": (1, 2)}
# default add_bos/add_eos per vocab type (BPE: false unless the pre-tokenizer says otherwise)
_DEFAULT_ADD = {"SPM": (True, False), "WPM": (True, False), "UGM": (False, True), "RWKV": (False, False)}
_BPE_PRE_ADD_BOS = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                    "jina-v5-nano", "tekken", "chameleon"}
_BPE_PRE_NO_BOS = {"chatglm-bpe", "glm4", "glm5"}
_SPECIALS = ("eot", "eom", "unk", "sep", "padding", "mask")

KV = "tokenizer.ggml."


@dataclass(frozen=True)
class VocabInfo:
    name: str
    path: Path
    tokenizer: str  # tokenizer.ggml.model
    pre: str | None
    tokens: tuple[bytes, ...]
    vocab_type: str
    add_bos: bool
    add_eos: bool
    bos: int | None
    eos: int | None
    specials: dict = field(default_factory=dict, compare=False)  # other special ids, as written
    synth: dict = field(default_factory=dict, compare=False)  # specsweep.synth.* recipe fields, if any

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def tokens_sha256(self) -> str:
        h = hashlib.sha256()
        for t in self.tokens:
            h.update(struct.pack("<I", len(t)))
            h.update(t)
        return h.hexdigest()

    def text(self, i: int) -> bytes:
        """Token i's text as llama.cpp compares it (strcmp: up to the first NUL; empty -> [EMPTY_i])."""
        t = self.tokens[i]
        return (t or f"[EMPTY_{i}]".encode()).split(b"\0", 1)[0]

    def describe(self) -> str:
        return f"{self.tokenizer} '{self.pre or ''}', {self.n_tokens} tokens"


def read_vocab(path: Path, name: str) -> VocabInfo:
    """The tokenizer section of a GGUF header (tensor data is never read)."""
    reader = open_gguf(path, name)
    model = header_field(reader, KV + "model")
    if not isinstance(model, str):
        raise SpecsweepError(f"model {name}: {path} has no tokenizer (tokenizer.ggml.model) in its header")
    if model not in _VOCAB_TYPE:
        raise SpecsweepError(f"model {name}: unknown tokenizer {model!r} (llama.cpp cannot load it)")
    pre = header_field(reader, KV + "pre")
    if model == "gemma4":
        pre = "gemma4"
    tokens = string_array(reader, KV + "tokens")
    if tokens is None:
        if _VOCAB_TYPE[model] != "NONE":
            raise SpecsweepError(f"model {name}: {path} has no token list (tokenizer.ggml.tokens) in its header")
        tokens = []
    vtype = _VOCAB_TYPE[model]
    n = len(tokens)

    bos, eos = _DEFAULT_BOS_EOS[model]
    add_bos, add_eos = _DEFAULT_ADD.get(vtype, (False, False))
    if vtype == "BPE" and pre in _BPE_PRE_ADD_BOS:
        add_bos = True
    if vtype == "BPE" and pre in _BPE_PRE_NO_BOS:
        bos = None
    bos = _special_id(reader, "bos", bos, n)
    eos = _special_id(reader, "eos", eos, n)
    add_bos = _flag(reader, "add_bos_token", add_bos)
    add_eos = _flag(reader, "add_eos_token", add_eos)
    if pre == "gemma4":
        add_bos = True
    specials = {s: header_field(reader, f"{KV}{s}_token_id") for s in _SPECIALS
                if header_field(reader, f"{KV}{s}_token_id") is not None}
    synth = {k[len("specsweep.synth."):]: header_field(reader, k) for k in reader.fields
             if k.startswith("specsweep.synth.")}
    return VocabInfo(name, Path(path), model, pre if isinstance(pre, str) else None, tuple(tokens), vtype,
                     bool(add_bos), bool(add_eos), bos, eos, specials, synth)


def _special_id(reader, which: str, default: int | None, n: int) -> int | None:
    if default is not None and default >= n:
        default = None  # llama.cpp disables a default id outside the vocabulary
    value = header_field(reader, f"{KV}{which}_token_id")
    if isinstance(value, int) and 0 <= value < n:
        return value
    return default


def _flag(reader, key: str, default: bool) -> bool:
    value = header_field(reader, KV + key)
    return bool(value) if isinstance(value, (bool, int)) else default


def fingerprint(v: VocabInfo) -> dict:
    """The vocabulary facts models.lock records (`vocab = { ... }`)."""
    out = {"tokenizer": v.tokenizer}
    if v.pre is not None:
        out["pre"] = v.pre
    out |= {"n_tokens": v.n_tokens, "tokens_sha256": v.tokens_sha256}
    if v.bos is not None:
        out["bos"] = v.bos
    if v.eos is not None:
        out["eos"] = v.eos
    return out | {"add_bos": v.add_bos, "add_eos": v.add_eos}


# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairCheck:
    target: VocabInfo
    draft: VocabInfo
    warnings: tuple[str, ...] = ()


def first_difference(t: VocabInfo, d: VocabInfo) -> int | None:
    """The first token id (from 5, as llama.cpp checks) whose texts differ, or the first id only one has."""
    n = min(t.n_tokens, d.n_tokens)
    for i in range(SPEC_VOCAB_CHECK_START_TOKEN_ID, n):
        if t.text(i) != d.text(i):
            return i
    if t.n_tokens != d.n_tokens:
        return max(n, SPEC_VOCAB_CHECK_START_TOKEN_ID)
    return None


def _show(v: VocabInfo, i: int) -> str:
    if i >= v.n_tokens:
        return "(no such token)"
    text = v.text(i).decode("utf-8", errors="backslashreplace")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def check_pair(target_name: str, target_path: Path, draft_name: str, draft_path: Path,
               lock_path: Path | None = None) -> PairCheck:
    """Refuse (SpecsweepError) a draft llama.cpp would refuse for this target; else the warnings."""
    t = read_vocab(target_path, target_name)
    d = read_vocab(draft_path, draft_name)
    reason = _refusal(t, d)
    if reason:
        i = first_difference(t, d)
        where = (f"first differing token: id {i} is {_show(t, i)} in the target, {_show(d, i)} in the draft"
                 if i is not None else "the token texts agree")
        raise SpecsweepError(f"draft {draft_name} cannot speculate for target {target_name}: {reason}; {where}; "
                             f"{suggest_draft(t, target_name, draft_name, lock_path)}")
    return PairCheck(t, d, tuple(_warnings(t, d)))


def _refusal(t: VocabInfo, d: VocabInfo) -> str | None:
    if t.vocab_type != d.vocab_type:
        return (f"tokenizer types differ (target {t.vocab_type} '{t.tokenizer}', draft {d.vocab_type} "
                f"'{d.tokenizer}')")
    if t.add_bos != d.add_bos or (t.add_bos and t.bos != d.bos):
        return f"BOS differs (target add_bos={t.add_bos} id {t.bos}, draft add_bos={d.add_bos} id {d.bos})"
    if t.add_eos != d.add_eos or (t.add_eos and t.eos != d.eos):
        return f"EOS differs (target add_eos={t.add_eos} id {t.eos}, draft add_eos={d.add_eos} id {d.eos})"
    diff = abs(t.n_tokens - d.n_tokens)
    if diff > SPEC_VOCAB_MAX_SIZE_DIFFERENCE:
        return (f"vocabulary sizes {t.n_tokens} (target) and {d.n_tokens} (draft) differ by {diff} tokens "
                f"(llama.cpp allows {SPEC_VOCAB_MAX_SIZE_DIFFERENCE})")
    n = min(t.n_tokens, d.n_tokens)
    if any(t.text(i) != d.text(i) for i in range(SPEC_VOCAB_CHECK_START_TOKEN_ID, n)):
        return f"token texts differ (both {t.tokenizer} vocabularies, {t.n_tokens} and {d.n_tokens} tokens)"
    return None


def _warnings(t: VocabInfo, d: VocabInfo) -> list[str]:
    out = []
    if t.n_tokens != d.n_tokens:
        out.append(f"vocabulary sizes differ by {abs(t.n_tokens - d.n_tokens)} tokens ({t.n_tokens} target, "
                   f"{d.n_tokens} draft); llama.cpp accepts up to {SPEC_VOCAB_MAX_SIZE_DIFFERENCE}")
    if t.pre != d.pre:
        out.append(f"pre-tokenizers differ (target {t.pre!r}, draft {d.pre!r}); llama.cpp does not check them")
    if not t.add_bos and t.bos != d.bos:
        out.append(f"BOS ids differ (target {t.bos}, draft {d.bos}), unused since add_bos is false")
    if not t.add_eos and t.eos != d.eos:
        out.append(f"EOS ids differ (target {t.eos}, draft {d.eos}); the target decides where generation stops")
    for s in _SPECIALS:
        if t.specials.get(s) != d.specials.get(s):
            out.append(f"{s} token ids differ (target {t.specials.get(s)}, draft {d.specials.get(s)})")
    return out


def suggest_draft(t: VocabInfo, target_name: str, draft_name: str, lock_path: Path | None = None) -> str:
    """Where a draft with the target's vocabulary comes from: same synthetic family, models.lock, or what to look for."""
    card = t.synth.get("card")
    if card:
        from specsweep.synth.cards import CARDS

        target_card = CARDS.get(card)
        if target_card is not None:
            same = [c for c in CARDS.values() if c.family == target_card.family and c.name != card and not c.target]
            if same:
                smallest = min(same, key=lambda c: c.n_embd * c.n_layer)
                scale = t.synth.get("scale", "full")
                return (f"use a draft of the target's vocabulary family, e.g. "
                        f"{{ synth = \"{smallest.name}\", scale = \"{scale}\" }}")
    drafts = _lock_drafts_for(t, target_name, draft_name, lock_path)
    if drafts:
        return "use a draft with the target's vocabulary, e.g. models.lock " + " or ".join(drafts)
    return f"use a draft converted with the target's tokenizer ({t.describe()})"


def _lock_drafts_for(t: VocabInfo, target_name: str, draft_name: str, lock_path: Path | None) -> list[str]:
    from specsweep.models import lockfile

    try:
        lock = lockfile.load(lock_path)
    except SpecsweepError:
        return []
    out = []
    for e in lock.entries:
        v = e.vocab
        if e.role != "draft" or v is None or e.name in (draft_name, target_name):
            continue
        if v.get("tokens_sha256") and "vocab" not in e.unverified:
            if v["tokens_sha256"] == t.tokens_sha256:
                out.append(e.name)
        elif (v.get("tokenizer") == t.tokenizer and v.get("pre") == t.pre
              and abs(v.get("n_tokens", -10**9) - t.n_tokens) <= SPEC_VOCAB_MAX_SIZE_DIFFERENCE):
            out.append(f"{e.name} (vocabulary unverified)")
    return out
