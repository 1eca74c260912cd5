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
and pre-tokenizer, then the GGUF keys, then each model's `override_kv` (what llama.cpp's
--override-kv changes: scalar keys, not the token list). Differences llama.cpp tolerates
(pre-tokenizer, EOT/PAD ids, a size difference within 128) come back as warnings.

Three outcomes (`pair_check`): compatible; compatible after an override (the files as they are
would be refused, the models' override_kv make them pass); refused. Where a refusal comes from a
special token the file does not set (llama.cpp then uses its default: BPE's BOS is 11), the
refusal names the override_kv line that aligns it with the other model.

The vocabulary fingerprint recorded in models.lock is `fingerprint(read_vocab(path))` (the file as
it is, no overrides): tokenizer model, pre-tokenizer, token count, BOS/EOS and add flags, the
special ids the file leaves to llama.cpp's default (`defaulted`), and `tokens_sha256`, the sha256
of every token text in id order, each as a 4-byte little-endian length and its bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.models import overrides as kv
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
    # which of bos, eos, add_bos, add_eos are llama.cpp's defaults (the file sets no valid value)
    defaulted: frozenset = field(default=frozenset(), compare=False)
    overrides: tuple = field(default=(), compare=False)  # the KvOverrides applied (specsweep.models.overrides)

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


def read_vocab(path: Path, name: str, overrides=()) -> VocabInfo:
    """The tokenizer section of a GGUF header (tensor data is never read), as llama.cpp loads it
    with these `override_kv` (KEY=TYPE:VALUE strings or KvOverrides)."""
    reader = open_gguf(path, name)
    return _vocab(reader, Path(path), name, _tokens(reader, path, name), _overrides(overrides, name, reader))


def _overrides(overrides, name: str, reader) -> tuple[kv.KvOverride, ...]:
    if overrides and isinstance(next(iter(overrides)), str):
        overrides = kv.parse_overrides(list(overrides), f"model {name}")
    overrides = tuple(overrides)
    kv.check_against_header(overrides, reader, name)
    return overrides


def _tokens(reader, path: Path, name: str) -> list[bytes]:
    tokens = string_array(reader, KV + "tokens")  # an array: llama.cpp cannot override it
    if tokens is None:
        model = header_field(reader, KV + "model")
        if isinstance(model, str) and _VOCAB_TYPE.get(model) != "NONE":
            raise SpecsweepError(f"model {name}: {path} has no token list (tokenizer.ggml.tokens) in its header")
        tokens = []
    return tokens


def _vocab(reader, path: Path, name: str, tokens: list[bytes], overrides: tuple) -> VocabInfo:
    def get(key: str):
        return header_field(reader, KV + key, None, overrides)

    model = get("model")
    if not isinstance(model, str):
        raise SpecsweepError(f"model {name}: {path} has no tokenizer (tokenizer.ggml.model) in its header")
    if model not in _VOCAB_TYPE:
        raise SpecsweepError(f"model {name}: unknown tokenizer {model!r} (llama.cpp cannot load it)")
    if _VOCAB_TYPE[model] == "NONE":
        tokens = []
    pre = get("pre")
    if model == "gemma4":
        pre = "gemma4"
    vtype = _VOCAB_TYPE[model]
    n = len(tokens)

    bos, eos = _DEFAULT_BOS_EOS[model]
    add_bos, add_eos = _DEFAULT_ADD.get(vtype, (False, False))
    if vtype == "BPE" and pre in _BPE_PRE_ADD_BOS:
        add_bos = True
    if vtype == "BPE" and pre in _BPE_PRE_NO_BOS:
        bos = None
    defaulted = set()
    bos = _special_id(get("bos_token_id"), bos, n, "bos", defaulted)
    eos = _special_id(get("eos_token_id"), eos, n, "eos", defaulted)
    add_bos = _flag(get("add_bos_token"), add_bos, "add_bos", defaulted)
    add_eos = _flag(get("add_eos_token"), add_eos, "add_eos", defaulted)
    if pre == "gemma4" and not add_bos:
        add_bos = True
        defaulted.discard("add_bos")  # llama.cpp forces it, whatever the file says
    specials = {s: get(f"{s}_token_id") for s in _SPECIALS if get(f"{s}_token_id") is not None}
    synth = {k[len("specsweep.synth."):]: header_field(reader, k) for k in reader.fields
             if k.startswith("specsweep.synth.")}
    return VocabInfo(name, path, model, pre if isinstance(pre, str) else None, tuple(tokens), vtype,
                     bool(add_bos), bool(add_eos), bos, eos, specials, synth, frozenset(defaulted), overrides)


def _special_id(value, default: int | None, n: int, which: str, defaulted: set) -> int | None:
    if default is not None and default >= n:
        default = None  # llama.cpp disables a default id outside the vocabulary
    if isinstance(value, int) and not isinstance(value, bool):
        value &= 0xFFFFFFFF  # llama.cpp reads the id as uint32 (an int64 override is cut to it)
        if value < n:
            return value
    defaulted.add(which)  # absent, or outside the vocabulary: llama.cpp keeps the default
    return default


def _flag(value, default: bool, which: str, defaulted: set) -> bool:
    if isinstance(value, (bool, int)):
        return bool(value)
    defaulted.add(which)
    return default


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
    out |= {"add_bos": v.add_bos, "add_eos": v.add_eos}
    missing = [k for k in ("bos", "eos") if k in v.defaulted]
    return out | ({"defaulted": missing} if missing else {})


# ----------------------------------------------------------------------------------------------


COMPATIBLE = "compatible"
AFTER_OVERRIDE = "compatible after an override"
REFUSED = "refused"


@dataclass(frozen=True)
class PairCheck:
    """How this llama.cpp decides a draft/target pair, from the headers: `outcome` COMPATIBLE,
    AFTER_OVERRIDE (refused as the files are, `as_files` says why; accepted with the models'
    override_kv) or REFUSED (`reason`, and `fix`: the override_kv lines that would make it pass,
    where a missing or out-of-range special-token id or flag is the cause)."""
    target: VocabInfo
    draft: VocabInfo
    warnings: tuple[str, ...] = ()
    outcome: str = COMPATIBLE
    reason: str | None = None  # REFUSED: the rule that fails, with the overrides given
    as_files: str | None = None  # AFTER_OVERRIDE: the rule the files as they are fail
    fix: tuple[tuple[str, str], ...] = ()  # (role "target" | "draft", KEY=TYPE:VALUE)
    message: str | None = None  # REFUSED: the one-line refusal

    def line(self) -> str:
        """The outcome for `specsweep check`: one line."""
        if self.outcome == COMPATIBLE:
            return COMPATIBLE
        if self.outcome == AFTER_OVERRIDE:
            given = "; ".join(f"{role} {v.name} override_kv = {_toml_list(o.text for o in v.overrides)}"
                              for role, v in (("target", self.target), ("draft", self.draft)) if v.overrides)
            return f"{AFTER_OVERRIDE} (as the files are: {self.as_files}; with {given})"
        return f"{REFUSED}: {self.reason}" + (f"; fix: {fix_text(self)}" if self.fix else "")


class VocabRefused(SpecsweepError):
    """llama.cpp would refuse the pair (`check.reason`); the message is one line and names the fix."""

    def __init__(self, check: PairCheck):
        super().__init__(check.message)
        self.check = check


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"


def fix_text(c: PairCheck) -> str:
    """The override_kv that makes the pair pass, per model, and the llama.cpp flag that does the same."""
    parts = []
    for role, v in (("target", c.target), ("draft", c.draft)):
        lines = [o for r, o in c.fix if r == role]
        if lines:
            verb = "add to" if v.overrides else "give"
            parts.append(f"{verb} {role} {v.name} override_kv = {_toml_list(lines)}")
    flags = " ".join(f"--override-kv {o}" for _, o in c.fix)
    return " and ".join(parts) + f" (llama.cpp: {flags}, which applies to both models)"


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


def pair_check(target_name: str, target_path: Path, draft_name: str, draft_path: Path,
               lock_path: Path | None = None, target_overrides=(), draft_overrides=()) -> PairCheck:
    """The pair's outcome as this llama.cpp decides it, refused or not (SpecsweepError only for a
    file that cannot be read or an override that is malformed or would be ignored)."""
    treader, dreader = open_gguf(target_path, target_name), open_gguf(draft_path, draft_name)
    ttok, dtok = _tokens(treader, target_path, target_name), _tokens(dreader, draft_path, draft_name)
    tovr = _overrides(target_overrides, target_name, treader)
    dovr = _overrides(draft_overrides, draft_name, dreader)
    t = _vocab(treader, Path(target_path), target_name, ttok, tovr)
    d = _vocab(dreader, Path(draft_path), draft_name, dtok, dovr)
    reason = _refusal(t, d)
    if reason is None:
        as_files = None
        if tovr or dovr:
            as_files = _refusal(_vocab(treader, Path(target_path), target_name, ttok, ()),
                                _vocab(dreader, Path(draft_path), draft_name, dtok, ()))
        warnings = tuple(_warnings(t, d))
        if as_files:
            return PairCheck(t, d, warnings, AFTER_OVERRIDE, as_files=as_files)
        return PairCheck(t, d, warnings)
    fix = _fix(t, d)
    i = first_difference(t, d)
    where = (f"first differing token: id {i} is {_show(t, i)} in the target, {_show(d, i)} in the draft"
             if i is not None else "the token texts agree")
    check = PairCheck(t, d, (), REFUSED, reason, None, fix)
    remedy = f"fix: {fix_text(check)}" if fix else suggest_draft(t, target_name, draft_name, lock_path)
    message = (f"draft {draft_name} cannot speculate for target {target_name}: {reason}; {where}; "
               f"{remedy}")
    return dataclasses.replace(check, message=message)


def check_pair(target_name: str, target_path: Path, draft_name: str, draft_path: Path,
               lock_path: Path | None = None, target_overrides=(), draft_overrides=()) -> PairCheck:
    """Refuse (VocabRefused, one line naming the fix where an override is one) a draft llama.cpp
    would refuse for this target; else the PairCheck (its outcome and warnings)."""
    c = pair_check(target_name, target_path, draft_name, draft_path, lock_path, target_overrides, draft_overrides)
    if c.outcome == REFUSED:
        raise VocabRefused(c)
    return c


def _id(v: VocabInfo, which: str) -> str:
    value = v.bos if which == "bos" else v.eos
    if which not in v.defaulted:
        return str(value)
    return f"{value} [llama.cpp's {v.vocab_type} default: the file has no valid {KV}{which}_token_id]"


def _flag_text(v: VocabInfo, which: str) -> str:
    value = v.add_bos if which == "add_bos" else v.add_eos
    return f"{which}={value}" + (f" [default: the file has no {KV}{which}_token]" if which in v.defaulted else "")


def _refusal(t: VocabInfo, d: VocabInfo) -> str | None:
    if t.vocab_type != d.vocab_type:
        return (f"tokenizer types differ (target {t.vocab_type} '{t.tokenizer}', draft {d.vocab_type} "
                f"'{d.tokenizer}')")
    if t.add_bos != d.add_bos or (t.add_bos and t.bos != d.bos):
        return (f"BOS differs (target {_flag_text(t, 'add_bos')} id {_id(t, 'bos')}, "
                f"draft {_flag_text(d, 'add_bos')} id {_id(d, 'bos')})")
    if t.add_eos != d.add_eos or (t.add_eos and t.eos != d.eos):
        return (f"EOS differs (target {_flag_text(t, 'add_eos')} id {_id(t, 'eos')}, "
                f"draft {_flag_text(d, 'add_eos')} id {_id(d, 'eos')})")
    diff = abs(t.n_tokens - d.n_tokens)
    if diff > SPEC_VOCAB_MAX_SIZE_DIFFERENCE:
        return (f"vocabulary sizes {t.n_tokens} (target) and {d.n_tokens} (draft) differ by {diff} tokens "
                f"(llama.cpp allows {SPEC_VOCAB_MAX_SIZE_DIFFERENCE})")
    n = min(t.n_tokens, d.n_tokens)
    if any(t.text(i) != d.text(i) for i in range(SPEC_VOCAB_CHECK_START_TOKEN_ID, n)):
        return f"token texts differ (both {t.tokenizer} vocabularies, {t.n_tokens} and {d.n_tokens} tokens)"
    return None


# the overridable facts of the BOS and EOS rules: VocabInfo attribute -> (GGUF key, TYPE)
_FIXABLE = {"add_bos": (KV + "add_bos_token", "bool"), "bos": (KV + "bos_token_id", "int"),
            "add_eos": (KV + "add_eos_token", "bool"), "eos": (KV + "eos_token_id", "int")}


def _aligning(t: VocabInfo, d: VocabInfo, attr: str) -> tuple[str, str] | None:
    """The override that gives the model whose `attr` is llama.cpp's default the other's value from
    its file; None when both or neither are defaults (then the files disagree: no override is a fix)."""
    tv, dv = getattr(t, attr), getattr(d, attr)
    if tv == dv:
        return None
    if (attr in t.defaulted) == (attr in d.defaulted):
        return None
    role, value = ("target", dv) if attr in t.defaulted else ("draft", tv)
    if value is None:
        return None  # no id to give: the other model has none either
    key, kind = _FIXABLE[attr]
    return role, f"{key}={kind}:{str(value).lower() if kind == 'bool' else value}"


def _fix(t: VocabInfo, d: VocabInfo) -> tuple[tuple[str, str], ...]:
    """Override lines that make a refused pair pass, when a defaulted special token is the cause:
    each step aligns one defaulted fact of the failing rule; kept only if the pair then passes."""
    fix: list[tuple[str, str]] = []
    for _ in range(len(_FIXABLE)):
        reason = _refusal(t, d)
        if reason is None:
            return tuple(fix)
        rule = "bos" if reason.startswith("BOS") else "eos" if reason.startswith("EOS") else None
        if rule is None:
            return ()
        flag = f"add_{rule}"
        attrs = [flag] if getattr(t, flag) != getattr(d, flag) else [rule]
        step = _aligning(t, d, attrs[0])
        if step is None:
            return ()
        fix.append(step)
        attr = attrs[0]
        if step[0] == "target":
            t = dataclasses.replace(t, **{attr: getattr(d, attr)}, defaulted=t.defaulted - {attr})
        else:
            d = dataclasses.replace(d, **{attr: getattr(t, attr)}, defaulted=d.defaulted - {attr})
    return tuple(fix) if _refusal(t, d) is None else ()


def _warnings(t: VocabInfo, d: VocabInfo) -> list[str]:
    out = []
    if t.n_tokens != d.n_tokens:
        out.append(f"vocabulary sizes differ by {abs(t.n_tokens - d.n_tokens)} tokens ({t.n_tokens} target, "
                   f"{d.n_tokens} draft); llama.cpp accepts up to {SPEC_VOCAB_MAX_SIZE_DIFFERENCE}")
    if t.pre != d.pre:
        out.append(f"pre-tokenizers differ (target {t.pre!r}, draft {d.pre!r}); llama.cpp does not check them")
    if not t.add_bos and t.bos != d.bos:
        line = f"BOS ids differ (target {_id(t, 'bos')}, draft {_id(d, 'bos')}), unused since add_bos is false"
        step = _aligning(t, d, "bos")
        if step:  # e.g. unsloth's Qwen3.5-0.8B GGUF: no bos_token_id, so BPE's 11 against 248044
            line += (f"; llama.cpp builds that compare BOS ids regardless refuse the pair, and "
                     f"{step[0]} override_kv = {_toml_list([step[1]])} aligns them")
        out.append(line)
    if not t.add_eos and t.eos != d.eos:
        out.append(f"EOS ids differ (target {_id(t, 'eos')}, draft {_id(d, 'eos')}); the target decides where "
                   f"generation stops")
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
                if scale not in smallest.scales:  # tiny256 has the tiny vocabulary
                    scale = "tiny"
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
