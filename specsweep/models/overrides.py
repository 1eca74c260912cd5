"""`override_kv`: llama.cpp's `--override-kv KEY=TYPE:VALUE`, one list per model.

A model loads with its GGUF metadata as written except for the keys listed here, as llama.cpp's
`--override-kv` does (common/common.cpp `string_parse_kv_override`, src/llama-model-loader.cpp):

- KEY is everything before the first '=', 1..127 bytes (llama.cpp's `char key[128]`);
- TYPE is `int` (int64), `float` (double), `bool` (`true` or `false`) or `str` (at most 127 bytes);
- an override replaces the value llama.cpp reads through its loader's `get_key` (scalars: arrays
  such as `tokenizer.ggml.tokens` cannot be overridden), and only with the type llama.cpp reads
  the key as: a wrong type is ignored by llama.cpp (a warning), which specsweep refuses instead
  where it can tell from the file (`check_against_header`).

Where specsweep is stricter than llama.cpp, the input would otherwise load silently as something
else: an int or float value must be a whole number (llama.cpp's atol/atof read "12abc" as 12 and
"abc" as 0), an empty key would end llama.cpp's list early (its terminator is an empty key), and a
key listed twice is refused (llama.cpp keeps the first). One list item is one override: a comma
is part of the value (llama.cpp's command line splits on commas, so there a value with a comma
must be quoted).

llama.cpp's tools apply their one `--override-kv` list to the target and the draft alike;
specsweep keeps one list per model. To reproduce a llama.cpp command line, give the same list to
both models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from specsweep.errors import SpecsweepError

KEY_MAX_BYTES = 127  # llama_model_kv_override.key is char[128], NUL-terminated
STR_MAX_BYTES = 127  # .val_str likewise
# llama_model_kv_override_type (include/llama.h)
TYPE_TAGS = {"int": 0, "float": 1, "bool": 2, "str": 3}

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
                    re.IGNORECASE)
EXAMPLE = "tokenizer.ggml.bos_token_id=int:248044"


@dataclass(frozen=True)
class KvOverride:
    key: str
    type: str  # int | float | bool | str
    value: int | float | bool | str
    text: str  # as written: KEY=TYPE:VALUE

    def __str__(self) -> str:
        return self.text


def parse_override(text: object) -> KvOverride:
    """One `KEY=TYPE:VALUE`; SpecsweepError (llama.cpp's wording, and what was expected) if malformed."""
    if not isinstance(text, str):
        raise SpecsweepError(f"an override must be a string KEY=TYPE:VALUE, got {text!r}")
    if "\0" in text:
        raise SpecsweepError(f"malformed KV override {text!r}: a NUL character would cut the C string")
    key, sep, rest = text.partition("=")
    if not sep:
        raise SpecsweepError(f"malformed KV override {text!r}: no '=' (expected KEY=TYPE:VALUE, e.g. {EXAMPLE})")
    if not key:
        raise SpecsweepError(f"malformed KV override {text!r}: empty key (expected KEY=TYPE:VALUE, e.g. {EXAMPLE})")
    if len(key.encode()) > KEY_MAX_BYTES:
        raise SpecsweepError(f"malformed KV override {text!r}: the key is {len(key.encode())} bytes, "
                             f"llama.cpp allows {KEY_MAX_BYTES}")
    kind, colon, raw = rest.partition(":")
    if not colon or kind not in TYPE_TAGS:
        raise SpecsweepError(f"invalid type for KV override {text!r}: expected {key}=TYPE:VALUE with TYPE one of "
                             f"{', '.join(TYPE_TAGS)}")
    value: int | float | bool | str
    if kind == "int":
        if not _INT.fullmatch(raw) or not -2**63 <= int(raw) < 2**63:
            raise SpecsweepError(f"invalid integer value for KV override {text!r}: expected a whole number "
                                 f"that fits int64")
        value = int(raw)
    elif kind == "float":
        if not _FLOAT.fullmatch(raw):
            raise SpecsweepError(f"invalid float value for KV override {text!r}: expected a number like 0.5 or 1e-6")
        value = float(raw)
    elif kind == "bool":
        if raw not in ("true", "false"):
            raise SpecsweepError(f"invalid boolean value for KV override {text!r}: expected bool:true or bool:false")
        value = raw == "true"
    else:
        if len(raw.encode()) > STR_MAX_BYTES:
            raise SpecsweepError(f"malformed KV override {text!r}, value cannot exceed {STR_MAX_BYTES} chars "
                                 f"(it has {len(raw.encode())} bytes)")
        value = raw
    return KvOverride(key, kind, value, text)


def parse_overrides(items: object, where: str) -> tuple[KvOverride, ...]:
    """A model's `override_kv = [...]`; `where` names it in the one-line error."""
    if not isinstance(items, (list, tuple)):
        raise SpecsweepError(f"{where}: override_kv must be a list of \"KEY=TYPE:VALUE\" strings, e.g. "
                             f"[\"{EXAMPLE}\"]")
    out: dict[str, KvOverride] = {}
    for item in items:
        try:
            o = parse_override(item)
        except SpecsweepError as e:
            raise SpecsweepError(f"{where}: override_kv: {e.message}") from None
        if o.key in out:
            raise SpecsweepError(f"{where}: override_kv sets {o.key} twice ({out[o.key].text!r} and {o.text!r})")
        out[o.key] = o
    return tuple(out.values())


def merge(base: tuple[KvOverride, ...], extra: tuple[KvOverride, ...]) -> tuple[KvOverride, ...]:
    """`base` (a models.lock entry's list) with `extra` (the matrix's) on top: a key in both takes
    the matrix's value."""
    keys = {o.key for o in extra}
    return tuple(o for o in base if o.key not in keys) + tuple(extra)


def canonical(overrides) -> tuple[str, ...]:
    """The list as it enters a model's identity: sorted by key (the order does not change what loads)."""
    return tuple(o.text for o in sorted(overrides, key=lambda o: o.key))


def lookup(overrides, key: str) -> KvOverride | None:
    return next((o for o in overrides if o.key == key), None)


# ----------------------------------------------------------------------------------------------
# against a file: what llama.cpp would do with each override


def header_type(reader, key: str) -> str | None:
    """The override TYPE llama.cpp reads an existing GGUF key as ("array" for an array; None when the
    file has no such key)."""
    import gguf

    f = reader.fields.get(key)
    if f is None or not f.types:
        return None
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        return "array"
    if t == gguf.GGUFValueType.STRING:
        return "str"
    if t == gguf.GGUFValueType.BOOL:
        return "bool"
    if t in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        return "float"
    return "int"


# keys the header checks read, with the type llama.cpp reads them as, for a file that lacks them
KNOWN_TYPES = {"tokenizer.ggml.model": "str", "tokenizer.ggml.pre": "str",
               "tokenizer.ggml.add_bos_token": "bool", "tokenizer.ggml.add_eos_token": "bool",
               **{f"tokenizer.ggml.{s}_token_id": "int"
                  for s in ("bos", "eos", "eot", "eom", "unk", "sep", "padding", "mask")}}


def check_against_header(overrides, reader, name: str) -> None:
    """Refuse an override llama.cpp would ignore for this file: an array key, or a type other than
    the one llama.cpp reads the key as (it logs "Bad metadata override type" and keeps the file's value)."""
    for o in overrides:
        expected = header_type(reader, o.key) or KNOWN_TYPES.get(o.key)
        if expected == "array":
            raise SpecsweepError(f"model {name}: override_kv {o.text!r}: {o.key} is an array, which llama.cpp "
                                 f"cannot override")
        if expected is not None and expected != o.type:
            raise SpecsweepError(f"model {name}: override_kv {o.text!r}: llama.cpp reads {o.key} as {expected}, "
                                 f"so it would ignore a {o.type} override; write {o.key}={expected}:...")


# ----------------------------------------------------------------------------------------------
# to llama.cpp


def to_llama(overrides):
    """llama_model_params.kv_overrides for these overrides: an array of llama_model_kv_override
    ending with an entry whose key is empty (llama.cpp stops there). The caller keeps it alive
    while the model loads."""
    import llama_cpp as ll

    arr = (ll.llama_model_kv_override * (len(overrides) + 1))()  # zeroed: the last key is ""
    for slot, o in zip(arr, overrides):
        slot.key = o.key.encode()
        slot.tag = TYPE_TAGS[o.type]
        if o.type == "int":
            slot.value.val_i64 = o.value
        elif o.type == "float":
            slot.value.val_f64 = o.value
        elif o.type == "bool":
            slot.value.val_bool = o.value
        else:
            slot.value.val_str = o.value.encode()
    return arr
