"""`ngram-cache`: llama.cpp's three-level n-gram lookup (`common/ngram-cache.cpp`), as its speculative
implementation `common_speculative_impl_ngram_cache` (`common/speculative.cpp`) drives it.

Three caches map an n-gram to the tokens seen after it, with counts:
- context: n-grams of 1 to 4 tokens (LLAMA_NGRAM_MIN/MAX) of the target's text, built as it drafts;
- dynamic: the same sizes, from earlier runs (`--lookup-cache-dynamic`), read-only while drafting;
- static: 2-grams (LLAMA_NGRAM_STATIC) of a large corpus (`--lookup-cache-static`, made by
  `llama-lookup-create`).

A draft grows one token at a time, up to 8. For the n-grams that end the text so far, longest
first, the context cache proposes the follower with the largest count x weight (weight: 100 x its
count after the last 2 tokens in the static cache, or 1 if it has none there), if the n-gram's
sample and that follower's own share reach the lax thresholds (n = 1..4: 2, 2, 1, 1 samples;
66, 50, 50, 50 %). Failing that the dynamic cache, same rule with strict thresholds (4, 3, 2, 2;
75, 66, 66, 66 %); failing that the static cache's most frequent follower of the last 2 tokens
(2 samples, 50 %). No candidate ends the draft. Ties go to the follower that comes first in
libstdc++'s `std::unordered_map` iteration order, which is reproduced here (it depends on the order
followers were first seen, so a save and load can flip a tie, in llama.cpp as here), and counts are
multiplied in int32 as the C++ does: drafts match llama.cpp's token for token (GCC build; checked
against ngram-cache.cpp compiled with g++ 12 -O3 on thousands of random texts and cache files).

What this llama.cpp version does, surprising or not:
- The length is llama.cpp's hard-coded n_draft = 8: `--spec-draft-n-max`/`-n-min` are not read by
  ngram-cache, and it has no minimum length. `n_max`/`n_min` here default to that (8, 0); other
  values are a specsweep extension (a draft shorter than n_min is dropped). The caller's clamp (the
  loop's `n_max` argument: room left in the context and in n_predict) truncates, 0 = no clamp.
- The context cache is updated at each draft call with only the tokens new since the previous call
  (the whole prompt + id_last the first time, then the accepted tokens + the new id_last), and only
  with n-grams lying entirely inside that chunk: `common_ngram_cache_update` is handed the chunk
  alone. N-grams spanning two chunks are never added, so a step that accepted nothing adds nothing.
- `begin`, `process` and `accept` do nothing; the cache lives as long as the drafter (one per trial,
  as llama.cpp makes one per run).
- Texts under 4 tokens make llama.cpp read out of bounds for the longer n-grams; here those
  n-grams are skipped (a chat prompt is always longer).
- `llama-speculative-simple` has no `--lookup-cache-*` flags (only llama-lookup and llama-server
  register them), so there it runs on the context cache alone. Given files, speculative.cpp loads
  them (a missing or bad file aborts it: here a SpecsweepError) and never writes them
  (save_dynamic is hard-coded false). `llama-lookup` instead merges its context cache into the
  dynamic one at the end and saves it: that is `finish()`, which nobody has to call (the engine
  does not, to stay llama-speculative-simple's twin).

File format (`common_ngram_cache_save`/`_load`, native little-endian int32): per n-gram, its 4
tokens (-1 pads shorter ones), the number of followers k > 0, then k (token, count > 0) pairs.
"""

from __future__ import annotations

import array
import sys
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from specsweep.engine.drafters import Drafter
from specsweep.errors import SpecsweepError

LLAMA_NGRAM_MIN, LLAMA_NGRAM_MAX, LLAMA_NGRAM_STATIC = 1, 4, 2
TOKEN_NULL = -1
N_DRAFT = 8  # create_state_ngram_cache: `uint16_t n_draft = 8; // TODO get from config?`

# thresholds by n-gram size 1..4: at least this many samples, and the winner at least this share
LAX = ((2, 2, 1, 1), (66, 50, 50, 50))
STRICT = ((4, 3, 2, 2), (75, 66, 66, 66))

_M64 = (1 << 64) - 1
_FIB = 11400714819323198485  # common_token_hash_function's multiplier
# libstdc++'s bucket counts as an unordered_map grows from empty (max load factor 1): 13 buckets
# from the first element, then the prime after twice the count once the size exceeds it
_BUCKETS = (13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061,
            712697, 1447153, 2938679, 5967347, 12117689, 24607243, 49969847, 101473717, 206062531,
            418451333, 849749479, 1725587117, 3504151727, 8589934583)

Ngram = tuple  # of 1 to 4 tokens; a file's 4-token key with its trailing -1 padding removed
Part = dict  # token -> count, keys in insertion order (the history libstdc++'s order follows)


def _i32(x: int) -> int:
    """x as a C++ int32 computes it (two's complement wrap)."""
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _ngram_hashes(keys: list) -> np.ndarray:
    """common_ngram_hash_function of each n-gram: xor of token * 11400714819323198485 (mod 2**64)
    over its 4 tokens, -1 padding included."""
    padded = np.full((len(keys), LLAMA_NGRAM_MAX), TOKEN_NULL, dtype=np.int64)
    for i, key in enumerate(keys):
        padded[i, :len(key)] = key
    with np.errstate(over="ignore"):
        mixed = padded.astype(np.uint64) * np.uint64(_FIB)
    return np.bitwise_xor.reduce(mixed, axis=1)


def std_order(keys, ngrams: bool = False) -> list:
    """The order libstdc++'s unordered_map iterates `keys`, distinct and given in insertion order
    (no erasures): token ids (std::hash<int>, the identity), or n-grams with `ngrams`. A new node
    goes to the front of its bucket's run of nodes, or, when its bucket is empty, to the front of
    the whole list; a rehash re-inserts the nodes in their current order the same way."""
    keys = list(keys)
    n = len(keys)
    if n < 2:
        return keys
    if ngrams:
        hashes = _ngram_hashes(keys)
    elif n > 200:
        hashes = np.asarray(keys, dtype=np.int64).astype(np.uint64)
    else:
        hashes = [k & _M64 for k in keys]
    if isinstance(hashes, np.ndarray):
        return [keys[i] for i in _std_order_np(hashes).tolist()]
    order: list[int] = []  # indices into keys
    done = 0
    for n_bkt in _BUCKETS:
        runs: dict[int, list[int]] = {}  # bucket -> its nodes, oldest first; buckets oldest first
        for i in order:
            runs.setdefault(hashes[i] % n_bkt, []).append(i)
        top = min(n, n_bkt)
        for i in range(done, top):
            runs.setdefault(hashes[i] % n_bkt, []).append(i)
        done = top
        order = [i for run in reversed(runs.values()) for i in reversed(run)]
        if done == n:
            break
    return [keys[i] for i in order]


def _std_order_np(hashes: np.ndarray) -> np.ndarray:
    """std_order for many keys: the same bucket runs, newest run first and newest node first."""
    n, done = len(hashes), 0
    order = np.zeros(0, dtype=np.int64)
    for n_bkt in _BUCKETS:
        top = min(n, n_bkt)
        seq = np.concatenate([order, np.arange(done, top, dtype=np.int64)])
        _, first, inverse = np.unique(hashes[seq] % np.uint64(n_bkt), return_index=True, return_inverse=True)
        run_age = first[inverse.ravel()]  # where each node's bucket first shows up in seq
        order = seq[np.lexsort((-np.arange(len(seq)), -run_age))]
        done = top
        if done == n:
            break
    return order


# ---- caches: dict ngram -> Part, or a FileCache loaded read-only -------------------------------

def update_cache(cache: dict, tokens: list[int], ngram_min: int = LLAMA_NGRAM_MIN,
                 ngram_max: int = LLAMA_NGRAM_MAX) -> None:
    """common_ngram_cache_update(cache, ngram_min, ngram_max, tokens, nnew=len(tokens)): count the
    follower of every n-gram inside `tokens`, sizes ngram_min..ngram_max, in the C++ order."""
    for n in range(ngram_min, ngram_max + 1):
        for i in range(n, len(tokens)):
            key = tuple(tokens[i - n:i])
            token = tokens[i]
            part = cache.get(key)
            if part is None:
                cache[key] = {token: 1}
            else:
                part[token] = part.get(token, 0) + 1


def merge_caches(target: dict, add) -> None:
    """common_ngram_cache_merge: add `add`'s counts into `target`, in `add`'s iteration order."""
    for key in std_order(_keys(add), ngrams=True):
        part = add.get(key)
        have = target.get(key)
        if have is None:
            target[key] = dict(part)  # a copy keeps the source's order and bucket layout
            continue
        for token in std_order(part):
            have[token] = have.get(token, 0) + part[token]


def with_prior_runs(dynamic, texts: Sequence[list[int]]) -> dict:
    """The dynamic cache after earlier llama-lookup runs produced `texts` (prompt + output each):
    llama-lookup counts every n-gram of its whole text in its context cache and merges that into
    the dynamic cache at the end of the run. `dynamic` (a file's cache or a dict) is not changed."""
    out = dynamic.to_dict() if isinstance(dynamic, FileCache) else {k: dict(v) for k, v in dynamic.items()}
    for text in texts:
        run: dict = {}
        update_cache(run, list(text))
        merge_caches(out, run)
    return out


def _keys(cache) -> list:
    return cache.keys_in_order() if isinstance(cache, FileCache) else list(cache)


class FileCache:
    """A cache loaded from a file: sorted numpy arrays, a follower dict built on first look-up.
    Duplicate n-grams (or followers) in a file keep their first occurrence, as C++'s emplace does."""

    def __init__(self, keys4: np.ndarray, starts: np.ndarray, counts_n: np.ndarray,
                 tokens: np.ndarray, counts: np.ndarray):
        # n-gram i (file order) has followers tokens/counts[starts[i]:starts[i] + counts_n[i]]
        k = keys4.astype(np.int64).astype(np.uint64) & np.uint64(0xFFFFFFFF)
        hi, lo = (k[:, 0] << np.uint64(32)) | k[:, 1], (k[:, 2] << np.uint64(32)) | k[:, 3]
        by_key = np.lexsort((np.arange(len(k)), lo, hi))  # sorted by key, then file position
        hi, lo = hi[by_key], lo[by_key]
        first = np.ones(len(k), dtype=bool)
        first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        self._entry = by_key[first]  # file index of each distinct key, by key
        self._hi, self._lo = hi[first], lo[first]
        self._keys4, self._starts, self._n = keys4, starts, counts_n
        self._tokens, self._counts = tokens, counts
        self._memo: dict = {}

    def __len__(self) -> int:
        return len(self._entry)

    def _part(self, i: int) -> Part:
        a = int(self._starts[i])
        b = a + int(self._n[i])
        part: Part = {}
        for t, c in zip(self._tokens[a:b].tolist(), self._counts[a:b].tolist()):
            part.setdefault(t, c)
        return part

    def get(self, key: Ngram):
        got = self._memo.get(key, self)
        if got is not self:
            return got
        k = [t & 0xFFFFFFFF for t in key] + [0xFFFFFFFF] * (LLAMA_NGRAM_MAX - len(key))
        hi, lo = (k[0] << 32) | k[1], (k[2] << 32) | k[3]
        hi, lo = np.uint64(hi), np.uint64(lo)
        a = int(self._hi.searchsorted(hi, "left"))
        b = int(self._hi.searchsorted(hi, "right"))
        got = None
        if a < b:
            j = a + int(self._lo[a:b].searchsorted(lo))
            if j < b and self._lo[j] == lo:
                got = self._part(int(self._entry[j]))
        self._memo[key] = got
        return got

    def keys_in_order(self) -> list[Ngram]:
        """Distinct n-grams in file order (the insertion history of llama.cpp's loaded map)."""
        return [_strip(self._keys4[i].tolist()) for i in np.sort(self._entry)]

    def to_dict(self) -> dict:
        return {_strip(self._keys4[i].tolist()): self._part(int(i)) for i in np.sort(self._entry)}


def _strip(key4: list[int]) -> Ngram:
    while key4 and key4[-1] == TOKEN_NULL:
        key4.pop()
    return tuple(key4)


def _read_words(path: Path) -> array.array:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecsweepError(f"ngram cache file not found: {path}") from None
    except OSError as e:
        raise SpecsweepError(f"cannot read ngram cache file {path}: {e.strerror or e}") from None
    if len(raw) % 4:
        raise SpecsweepError(f"{path}: not a llama.cpp ngram cache ({len(raw)} bytes, not whole int32s)")
    words = array.array("i")
    words.frombytes(raw)
    if sys.byteorder == "big":
        words.byteswap()
    return words


def load_cache(path: str | Path) -> FileCache:
    """common_ngram_cache_load; SpecsweepError for a missing, truncated or corrupt file. (llama.cpp
    silently ignores a trailing partial n-gram of under 16 bytes; this refuses it too.)"""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SpecsweepError(f"ngram cache file not found: {path}") from None
    except OSError as e:
        raise SpecsweepError(f"cannot read ngram cache file {path}: {e.strerror or e}") from None
    return _load_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)  # a matrix makes one drafter per trial; the files do not change in between
def _load_cached(path: str, mtime_ns: int, size: int) -> FileCache:
    path = Path(path)
    words = _read_words(path)
    n, pos = len(words), 0
    starts = array.array("q")
    while pos < n:
        if pos + LLAMA_NGRAM_MAX + 1 > n:
            raise SpecsweepError(f"{path}: truncated ngram cache (an n-gram cut off at byte {4 * pos})")
        k = words[pos + LLAMA_NGRAM_MAX]
        if k <= 0:
            raise SpecsweepError(f"{path}: corrupt ngram cache ({k} followers at byte {4 * pos})")
        end = pos + LLAMA_NGRAM_MAX + 1 + 2 * k
        if end > n:
            raise SpecsweepError(f"{path}: truncated ngram cache (followers cut off at byte {4 * pos})")
        starts.append(pos)
        pos = end
    data = np.frombuffer(words, dtype=np.int32) if n else np.zeros(0, dtype=np.int32)
    heads = np.frombuffer(starts, dtype=np.int64) if starts else np.zeros(0, dtype=np.int64)
    keys4 = data[heads[:, None] + np.arange(LLAMA_NGRAM_MAX)] if len(heads) else np.zeros((0, 4), np.int32)
    counts_n = data[heads + LLAMA_NGRAM_MAX].astype(np.int64)
    first_pair = np.cumsum(counts_n) - counts_n  # index of each n-gram's first pair
    pair = np.arange(int(counts_n.sum())) - np.repeat(first_pair, counts_n)
    at = np.repeat(heads + LLAMA_NGRAM_MAX + 1, counts_n) + 2 * pair
    tokens, counts = data[at], data[at + 1]
    if len(counts) and counts.min() <= 0:
        bad = int(at[np.argmax(counts <= 0)]) + 1
        raise SpecsweepError(f"{path}: corrupt ngram cache (count {int(data[bad])} at byte {4 * bad})")
    return FileCache(keys4, first_pair, counts_n, tokens, counts)


def save_cache(cache, path: str | Path) -> None:
    """common_ngram_cache_save: n-grams and their followers in the order llama.cpp iterates its
    map with the same history, so the file is byte for byte the one llama.cpp would write."""
    out: list[int] = []
    for key in std_order(_keys(cache), ngrams=True):
        part = cache.get(key)
        out.extend(key)
        out.extend([TOKEN_NULL] * (LLAMA_NGRAM_MAX - len(key)))
        out.append(len(part))
        for token in std_order(part):
            out += (token, part[token])
    try:
        np.asarray(out, dtype="<i4").tofile(str(path))
    except OSError as e:
        raise SpecsweepError(f"cannot write ngram cache file {path}: {e.strerror or e}") from None


# ---- drafting ---------------------------------------------------------------------------------

def _first_in_order(part: Part, winners: list[int]) -> int:
    if len(winners) == 1:
        return winners[0]
    winners = set(winners)
    return next(t for t in std_order(part) if t in winners)


def _try_primary(cache, ngrams: list, part_static: Part, thresholds) -> int:
    """try_draft for the context or dynamic cache: longest n-gram first."""
    min_samples, min_percent = thresholds
    for i in range(len(ngrams) - 1, -1, -1):
        key = ngrams[i]
        part = cache.get(key) if key is not None else None
        if part is None:
            continue
        best, winners, total = 0, [], 0
        for token, count in part.items():
            s = part_static.get(token)
            score = _i32(count * (_i32(100 * s) if s is not None else 1))
            if score > best:
                best, winners = score, [token]
            elif score == best and winners:
                winners.append(token)
            total = _i32(total + count)
        if total < min_samples[i]:
            continue
        # the winner's own count decides the share, whatever weight made it win
        token = _first_in_order(part, winners) if winners else TOKEN_NULL
        count_max = part[token] if winners else 0
        if _i32(100 * count_max) < _i32(min_percent[i] * total):
            continue
        if token != TOKEN_NULL:
            return token
    return TOKEN_NULL


def _try_static(part: Part | None) -> int:
    if part is None:
        return TOKEN_NULL
    best, winners, total = 0, [], 0
    for token, count in part.items():
        if count > best:
            best, winners = count, [token]
        elif count == best and winners:
            winners.append(token)
        total = _i32(total + count)
    min_samples, min_percent = LAX[0][LLAMA_NGRAM_STATIC - 1], LAX[1][LLAMA_NGRAM_STATIC - 1]
    if total < min_samples or _i32(100 * best) < _i32(min_percent * total):
        return TOKEN_NULL
    return _first_in_order(part, winners) if winners else TOKEN_NULL


def draft_tokens(context, dynamic, static, text: list[int], n_draft: int,
                 n_text: int | None = None) -> list[int]:
    """common_ngram_cache_draft: up to n_draft tokens to follow `text` (the last token included;
    its last 4 tokens are enough when `n_text` gives the whole text's length). N-grams reaching
    before the text's start are skipped (llama.cpp reads out of bounds there)."""
    n_text = len(text) if n_text is None else n_text
    if n_text < LLAMA_NGRAM_STATIC:
        return []
    seq = list(text[-LLAMA_NGRAM_MAX:])
    out: list[int] = []
    while len(out) < n_draft:
        part_static = static.get(tuple(seq[-LLAMA_NGRAM_STATIC:]))
        have = n_text + len(out)
        ngrams = [tuple(seq[-n:]) if n <= have else None for n in range(LLAMA_NGRAM_MIN, LLAMA_NGRAM_MAX + 1)]
        token = _try_primary(context, ngrams, part_static or {}, LAX)
        if token == TOKEN_NULL:
            token = _try_primary(dynamic, ngrams, part_static or {}, STRICT)
        if token == TOKEN_NULL:
            token = _try_static(part_static)
        if token == TOKEN_NULL:
            break
        out.append(token)
        seq.append(token)
        del seq[0:len(seq) - LLAMA_NGRAM_MAX]
    return out


class NgramCache(Drafter):
    """Hooks: construct with the files, then only `draft` matters (`begin`/`process`/`accept` are
    llama.cpp's no-ops). `finish()` is optional: llama-lookup's end-of-run merge and save of the
    dynamic cache, which llama-speculative-simple and llama-server never do."""

    name = "ngram-cache"

    def __init__(self, n_max: int = N_DRAFT, n_min: int = 0, static_path: str | Path | None = None,
                 dynamic_path: str | Path | None = None, prior_texts: Sequence[list[int]] = ()):
        self.n_max, self.n_min = n_max, n_min
        self.static_path = Path(static_path) if static_path else None
        self.dynamic_path = Path(dynamic_path) if dynamic_path else None
        self.static = load_cache(self.static_path) if self.static_path else {}
        self.dynamic = load_cache(self.dynamic_path) if self.dynamic_path else {}
        if prior_texts:
            self.dynamic = with_prior_runs(self.dynamic, prior_texts)
        self.context: dict = {}
        self.cache_size = 0  # tokens of the text already handed to the context cache

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        if self.cache_size < len(prompt) + 1:
            update_cache(self.context, prompt[self.cache_size:] + [id_last])
            self.cache_size = len(prompt) + 1
        tail = prompt[len(prompt) - min(len(prompt), LLAMA_NGRAM_MAX - 1):] + [id_last]
        out = draft_tokens(self.context, self.dynamic, self.static, tail, self.n_max, len(prompt) + 1)
        if len(out) < self.n_min:
            return []
        return out[:n_max] if n_max > 0 else out

    def finish(self, path: str | Path | None = None) -> Path:
        """llama-lookup's end of run: merge the context cache into the dynamic cache and save it to
        `path` (default: the dynamic file given, or a new one). Call at most once, after the run."""
        path = Path(path) if path else self.dynamic_path
        if path is None:
            raise SpecsweepError("ngram-cache: no file to save the dynamic cache to")
        dynamic = self.dynamic.to_dict() if isinstance(self.dynamic, FileCache) else self.dynamic
        merge_caches(dynamic, self.context)
        self.dynamic = dynamic
        save_cache(dynamic, path)
        return path
