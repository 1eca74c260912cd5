"""`ngram-mod`: llama.cpp's hashed n-gram table over the context (`common/ngram-mod.cpp`).

A fixed table of 4M slots maps the hash of `n_match` tokens to the token that followed them last.
Drafting starts from the last n_match tokens and chains look-ups up to `n_max` tokens; a chain
shorter than `n_min` is no draft. New n-grams are added in chunks of 32 tokens, the table is reset
when a quarter full after the prompt, and after 5 drafts in a row with under 25% accepted.
Defaults are llama.cpp's: n_match 24, n_max 64, n_min 48.
"""

from __future__ import annotations

import numpy as np

from specsweep.engine.drafters import Drafter

TABLE_SIZE = 4 * 1024 * 1024
EMPTY = -1
_MULT = 6364136223846793005
_MASK = (1 << 64) - 1


class NgramMod(Drafter):
    name = "ngram-mod"

    def __init__(self, n_match: int = 24, n_max: int = 64, n_min: int = 48):
        self.n, self.n_max, self.n_min = n_match, n_max, n_min
        self.table = np.full(TABLE_SIZE, EMPTY, dtype=np.int32)
        self.used = 0
        self.i_last = 0
        self.n_draft_last = 0
        self.n_low = 0

    def _idx(self, tokens, start: int) -> int:
        h = 0
        for t in tokens[start : start + self.n]:
            h = (h * _MULT + t) & _MASK
        return h % TABLE_SIZE

    def _add(self, tokens, start: int) -> None:
        i = self._idx(tokens, start)
        if self.table[i] == EMPTY:
            self.used += 1
        self.table[i] = tokens[start + self.n]

    def reset(self) -> None:
        self.table.fill(EMPTY)
        self.used = 0

    def begin(self, prompt: list[int]) -> None:
        self.i_last = self.n_draft_last = 0
        if len(prompt) < self.n:
            return
        for i in range(len(prompt) - self.n):
            self._add(prompt, i)
        self.i_last = len(prompt) - self.n
        if self.used / TABLE_SIZE > 0.25:
            self.reset()

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        self.n_draft_last = 0
        n, cur = self.n, len(prompt)
        if cur < n:
            return []
        if self.i_last + 32 < cur:
            for i in range(self.i_last, cur - n):
                self._add(prompt, i)
            self.i_last = cur - n
        window = prompt[cur - n + 1 :] + [id_last]
        out: list[int] = []
        for i in range(self.n_max):
            token = int(self.table[self._idx(window, i)])
            if token == EMPTY:
                if i < self.n_min:
                    return []
                break
            window.append(token)
            out.append(token)
        self.n_draft_last = len(out)
        return out[:n_max] if n_max > 0 else out

    def accept(self, n_accepted: int) -> None:
        if self.n_draft_last > 0:
            if n_accepted / self.n_draft_last < 0.25:
                self.n_low += 1
                if self.n_low >= 5:
                    self.reset()
                    self.n_low = 0
                    self.i_last = 0
            else:
                self.n_low = 0
