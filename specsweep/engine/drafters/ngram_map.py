"""`ngram-simple`, `ngram-map-k` and `ngram-map-k4v`: drafts copied from the context's own history
(llama.cpp's `common/ngram-map.cpp`, `common_speculative_impl_ngram_simple/_map_k`).

All three take the last `size_n` tokens (the last one being the token just sampled) as a key and
look for it earlier in the history; the `size_m` tokens that followed it there are the draft.

- `ngram-simple` (common_ngram_simple_draft): the most recent earlier occurrence of the key (never
  at position 0); no draft unless the history holds more than n + m + 1 tokens and the copy
  available after the match is at least n tokens long (llama.cpp compares it with n, not m).
- `ngram-map-k` / `-k4v` (common_ngram_map_draft): the same key search, but through a hash map
  from the key's LCG hash (2^18 buckets, the first index stored in a bucket wins) and linear scans
  over the history not yet hashed, with statistics per key. `-k` (key only) drafts at once, at
  most as many tokens as were accepted the last time this key drafted; `-k4v` also counts the
  (up to 4) different m-grams seen after the key and drafts only once the key was seen
  `min_hits` times and its most frequent m-gram is at least twice as frequent as the others
  together. llama.cpp's quirks are kept: the statistics scan includes the match position again
  on every call (a key found at the same place twice counts twice), and the draft is the text
  after the match position, not after the most frequent m-gram's own position.
Defaults are llama.cpp's (size_n 12, size_m 48, min_hits 1).
"""

from __future__ import annotations

import numpy as np

from specsweep.engine.drafters import Drafter

_LCG = 2654435761
_U32 = 0xFFFFFFFF
HASH_BUCKETS = 262144  # COMMON_NGRAM_HASH_MAP_SIZE
MAX_VALUES = 4  # COMMON_NGRAM_MAX_VALUES
MAX_COUNT = 16380  # COMMON_NGRAM_MAX_VALUE_COUNT


class NgramSimple(Drafter):
    name = "ngram-simple"

    def __init__(self, size_n: int = 12, size_m: int = 48):
        self.n, self.m = size_n, size_m
        self.n_max = size_m  # its draft limit (llama.cpp's impl n_max)
        # every n-gram of the history that may be matched (start >= 1), by content -> its latest
        # start: the history only grows between drafts, so it is indexed once, incrementally
        self._last: dict[tuple, int] = {}
        self._history: list[int] = []
        self._next = 1  # the next start to index

    def _index(self, tokens: list[int], last_start: int) -> None:
        n = self.n
        if len(tokens) < len(self._history) or tokens[: len(self._history)] != self._history:
            self._last, self._next = {}, 1  # the history changed under us: start over
        for j in range(self._next, last_start + 1):
            self._last[tuple(tokens[j : j + n])] = j
        self._next = max(self._next, last_start + 1)
        self._history = tokens[: last_start + n]

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        n, m, cur = self.n, self.m, len(prompt)
        if cur <= n + m + 1:
            return []
        self._index(prompt, cur - n - 1)  # the search starts at cur - n - 1 and goes down to 1
        match = self._last.get(tuple(prompt[cur - n + 1 :]) + (id_last,), 0)
        if match == 0:
            return []
        copy = min(m, cur - (match + n))
        if copy < n:
            return []
        out = prompt[match + n : match + n + copy]
        return out[:n_max] if n_max > 0 else out


def _hash(tokens, start: int, n: int) -> int:
    h = 0
    for t in tokens[start : start + n]:
        h = (h * _LCG + t) & _U32
    return h


def _hashes(tokens: list[int], starts: range, n: int) -> np.ndarray:
    """The LCG hash of the n-gram at each start (vectorised; uint64 products, reduced mod 2^32)."""
    arr = np.asarray(tokens, dtype=np.uint64)
    idx = np.asarray(starts, dtype=np.int64)
    h = np.zeros(len(idx), dtype=np.uint64)
    for i in range(n):
        h = (h * np.uint64(_LCG) + arr[idx + i]) & np.uint64(_U32)
    return h


class _Value:
    __slots__ = ("idx", "num", "n_accepted")

    def __init__(self, n_accepted: int):
        self.idx, self.num, self.n_accepted = 0, 0, n_accepted


class _Key:
    __slots__ = ("idx", "stat_idx", "num", "values")

    def __init__(self, idx: int, m: int):
        self.idx, self.stat_idx, self.num = idx, 0, 0
        self.values = [_Value(m) for _ in range(MAX_VALUES)]


class NgramMap(Drafter):
    """ngram-map-k (key_only) and ngram-map-k4v, one sequence."""

    def __init__(self, size_n: int = 12, size_m: int = 48, min_hits: int = 1, key_only: bool = True):
        self.name = "ngram-map-k" if key_only else "ngram-map-k4v"
        self.n, self.m, self.min_hits, self.key_only = size_n, size_m, min_hits, key_only
        self.n_max = size_m  # its draft limit (llama.cpp's impl n_max)
        self.keys: list[_Key] = []
        self._key_at: dict[tuple, int] = {}  # key content -> offset in keys (contents are unique)
        self.bucket: dict[int, int] = {}  # hash bucket -> history index (absent = llama.cpp's 0)
        self.bucket_last = 0  # key_map_last_idx
        self.size_last_begin = 0
        self.idx_last_check = 0
        self.last: tuple[int, int] | None = None  # (key offset, value slot) of the last draft

    def begin(self, prompt: list[int]) -> None:
        # a fresh map per trial: llama.cpp's clean-up of keys past a shrunk history never applies
        self.idx_last_check = self.size_last_begin = len(prompt)

    def _scan(self, inp, key, hi: int, lo: int) -> int:
        """The first j from hi down to lo + 1 where the key starts, else 0."""
        n = self.n
        for j in range(hi, lo, -1):
            if inp[j : j + n] == key:
                return j
        return 0

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        out = self._draft(prompt, id_last)
        return out[:n_max] if n_max > 0 else out

    def _draft(self, inp: list[int], sampled: int) -> list[int]:
        self.last = None
        n, m, cur = self.n, self.m, len(inp)
        if cur < 2 * n + m:
            return []
        self.idx_last_check = cur
        key = inp[cur - n + 1 :] + [sampled]
        top = cur - n - m - 1  # the highest start a key may match at (its m-gram must fit)
        match = 0
        idx = self.bucket.get(_hash(key, 0, n) % HASH_BUCKETS, 0)
        if idx != 0 and idx < top and inp[idx : idx + n] == key:
            match = idx
        if match == 0 and self.size_last_begin > n + m + 1:
            match = self._scan(inp, key, self.size_last_begin - n - m - 1, self.bucket_last)
        if match == 0:
            match = self._scan(inp, key, top, max(self.size_last_begin, self.bucket_last))
        self._add_hashes(inp, top)
        if match == 0:
            return []

        k = self._key_at.get(tuple(key))
        if k is None:
            k = self._key_at[tuple(key)] = len(self.keys)
            self.keys.append(_Key(match, m))
        entry = self.keys[k]
        entry.num = min(entry.num + 1, MAX_COUNT)
        if self.key_only:
            self.last = (k, 0)
            return inp[match + n : match + n + min(m, entry.values[0].n_accepted)]
        if entry.num < self.min_hits:
            return []
        self._count_values(inp, entry, key, match)
        counts = [v.num for v in entry.values]
        best = max(range(MAX_VALUES), key=lambda v: (counts[v], -v)) if max(counts) > 0 else 0
        rest = sum(counts) - counts[best]
        if rest > 0 and counts[best] < 2 * rest:
            return []  # no m-gram clearly dominates
        self.last = (k, best)
        return inp[match + n : match + n + min(m, entry.values[best].n_accepted)]

    def _add_hashes(self, inp: list[int], top: int) -> None:
        """Store new n-gram starts in the hash map, in llama.cpp's order (descending; the first
        index stored in a bucket stays)."""
        n, m = self.n, self.m
        starts: list[int] = []
        if self.size_last_begin > n + m + 1:
            starts += range(self.size_last_begin - n - m - 1, self.bucket_last, -1)
        starts += range(top, max(self.size_last_begin, self.bucket_last), -1)
        if starts:
            hashes = _hashes(inp, starts, n) % np.uint64(HASH_BUCKETS) if len(starts) > 32 else \
                [_hash(inp, j, n) % HASH_BUCKETS for j in starts]
            for j, b in zip(starts, hashes):
                self.bucket.setdefault(int(b), j)
        self.bucket_last = max(top, self.bucket_last)

    def _count_values(self, inp: list[int], entry: _Key, key: list[int], match: int) -> None:
        """Count the m-grams seen after each occurrence of the key from its last statistics index
        up to (and including) the match."""
        n, m = self.n, self.m
        for i in range(entry.stat_idx, match + 1):
            if inp[i : i + n] != key:
                continue
            begin = i + n
            for v in entry.values:
                if v.idx == 0:  # a free slot: a new m-gram
                    v.idx, v.num, v.n_accepted = begin, 0, m
                    break
                if inp[begin : begin + m] == inp[v.idx : v.idx + m]:
                    break
            else:
                continue  # four other m-grams already: this one is not counted
            v.num = min(v.num + 1, MAX_COUNT)
        entry.stat_idx = match

    def accept(self, n_accepted: int) -> None:
        if self.last is not None:
            k, v = self.last
            self.keys[k].values[v].n_accepted = n_accepted
