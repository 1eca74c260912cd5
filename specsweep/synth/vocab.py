"""Family vocabularies: a real byte-level BPE tokenizer section for synthetic models.

llama.cpp tokenizes prompts with the GGUF's own token list and merges, so a synthetic model needs a
tokenizer that works, not just `n_vocab` placeholder strings. Each family (qwen3, qwen35) gets a
GPT-2-style byte-level BPE learned from a small shipped corpus: 256 byte tokens, the learned merges,
Qwen's chat control tokens, then `[PAD…]` filler up to the card's vocabulary size (as the Qwen
converters pad to 151936 / 248320). The list depends only on the family and the size, so every
card of a family is vocab-compatible with every other card of that family at that scale.
"""

from __future__ import annotations

import collections
import functools
import re
from dataclasses import dataclass
from importlib import resources

# llama.cpp token types (gguf.TokenType values)
NORMAL, CONTROL, UNUSED = 1, 3, 5

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MAX_MERGES = 1024

# llama.cpp pre-tokenizer names for each family (see llama-vocab.cpp)
PRE_TOKENIZER = {"qwen3": "qwen2", "qwen35": "qwen35"}

# ChatML with Qwen3.5/3.6's thinking switch, the project's own: the assistant's turn opens a think
# block (`<think>\n`, thinking on, also when `enable_thinking` is not given, as Qwen3.6 thinks by
# default) or an empty one (`<think>\n\n</think>\n\n`, enable_thinking false). llama.cpp's own
# renderer (llama_chat_apply_template) recognises ChatML by <|im_start|> and ignores the switch;
# the matrix key `thinking` renders this text with jinja2 instead, as llama-server --jinja does.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)

_WORD = re.compile(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+")


@dataclass(frozen=True)
class Vocab:
    family: str
    tokens: tuple[str, ...]
    types: tuple[int, ...]
    merges: tuple[str, ...]
    bos_id: int
    eos_id: int
    pad_id: int
    pre: str

    @property
    def size(self) -> int:
        return len(self.tokens)


@functools.lru_cache(maxsize=None)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what BPE token texts are made of)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@functools.lru_cache(maxsize=None)
def learned_merges(n_merges: int = MAX_MERGES) -> tuple[tuple[str, str], ...]:
    """Byte-level BPE merges learned from the shipped corpus (deterministic: ties break by text)."""
    text = resources.files("specsweep.synth").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    b2u = byte_to_unicode()
    counts = collections.Counter(
        "".join(b2u[b] for b in chunk.encode("utf-8")) for chunk in _WORD.findall(text)
    )
    words = [[list(w), n] for w, n in counts.items()]
    pairs: collections.Counter = collections.Counter()
    where: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    for i, (syms, n) in enumerate(words):
        for pair in zip(syms, syms[1:]):
            pairs[pair] += n
            where[pair].add(i)

    merges = []
    while len(merges) < n_merges and pairs:
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pairs[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for i in list(where.pop(best, ())):
            syms, n = words[i]
            for pair in zip(syms, syms[1:]):  # remove this word's old pairs
                pairs[pair] -= n
                if pairs[pair] <= 0:
                    del pairs[pair]
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == best[0] and syms[j + 1] == best[1]:
                    out.append(joined)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[i][0] = out
            for pair in zip(out, out[1:]):  # and add its new ones
                pairs[pair] += n
                where[pair].add(i)
        pairs.pop(best, None)
    return tuple(merges)


@functools.lru_cache(maxsize=None)
def family_vocab(family: str, n_vocab: int) -> Vocab:
    if family not in PRE_TOKENIZER:
        raise ValueError(f"unknown vocabulary family {family!r}")
    b2u = byte_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    seen = set(tokens)
    budget = n_vocab - len(tokens) - len(SPECIALS)
    if budget < 0:
        raise ValueError(f"vocabulary of {n_vocab} tokens is too small for a byte-level BPE")
    merges = []
    for left, right in learned_merges():
        if len(merges) >= budget:
            break
        merged = left + right
        if merged in seen:
            continue
        tokens.append(merged)
        seen.add(merged)
        merges.append(f"{left} {right}")
    types = [NORMAL] * len(tokens)
    first_special = len(tokens)
    tokens += SPECIALS
    types += [CONTROL] * len(SPECIALS)
    while len(tokens) < n_vocab:
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(UNUSED)
    return Vocab(
        family=family,
        tokens=tuple(tokens),
        types=tuple(types),
        merges=tuple(merges),
        bos_id=first_special,  # <|endoftext|>, as in Qwen's GGUFs
        eos_id=first_special + 2,  # <|im_end|>
        pad_id=first_special,
        pre=PRE_TOKENIZER[family],
    )
