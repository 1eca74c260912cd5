"""Drafters: where the tokens a target verifies come from.

Each follows the matching `common_speculative_impl_*` in llama.cpp's `common/speculative.cpp`
(`specsweep/methods.py` says which method builds which drafter):
the hooks are called by the loop in `engine/speculative.py` at the same points llama.cpp calls
`begin`, `draft`, `process` and `accept`.
"""

from __future__ import annotations


class Drafter:
    """No-op hooks; a drafter overrides what it needs."""

    name = "none"
    # several streams (engine/parallel.py): where this stream's tokens start in the target's last
    # batch, for a drafter that reads the target's rows of it (MTP, DFlash, DSpark, EAGLE-3)
    row0 = 0

    def begin(self, prompt: list[int]) -> None:
        """The prompt (all but its last token) has been decoded by the target."""

    def process(self, tokens: list[int], pos0: int) -> None:
        """The target decoded this batch at positions pos0..; a draft model decodes it too."""

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        """Up to n_max tokens to follow id_last (n_max 0: no limit from the caller)."""
        return []

    def accept(self, n_accepted: int) -> None:
        """n_accepted tokens of the last draft were kept."""

    # draft-context bookkeeping (only a draft model has a context)
    def save_checkpoint(self) -> None:
        pass

    def restore_checkpoint(self, pos: int) -> None:
        """The draft context goes back to positions < pos: after drafting, and after a hybrid
        target rolled back to its checkpoint."""

    def trim(self, n_past: int) -> None:
        """Drop everything at positions >= n_past (the rejected tail)."""


from specsweep.engine.drafters.dflash import DFlash, DSpark  # noqa: E402
from specsweep.engine.drafters.draft_model import DraftModel  # noqa: E402
from specsweep.engine.drafters.eagle3 import Eagle3  # noqa: E402
from specsweep.engine.drafters.mtp import Mtp  # noqa: E402
from specsweep.engine.drafters.ngram_cache import NgramCache  # noqa: E402
from specsweep.engine.drafters.ngram_map import NgramMap, NgramSimple  # noqa: E402
from specsweep.engine.drafters.ngram_mod import NgramMod  # noqa: E402

# Which drafter a method uses, and with which settings, is specsweep/methods.py's business.
__all__ = ["Drafter", "DFlash", "DSpark", "DraftModel", "Eagle3", "Mtp", "NgramCache", "NgramMap", "NgramMod",
           "NgramSimple"]
