"""What a trial generated, kept in its record so that anyone can audit it: the token ids (int32,
zlib, base64: a 300-token trial takes about 0.6 kB instead of 2 kB of JSON) and the text.

On a GPU, speculative output differs from plain output more often than not (batched and one-token
kernels round near-ties apart); only the stored outputs let a reader see where and how.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np


def pack(tokens: list[int], text: str) -> dict:
    raw = np.asarray(tokens, dtype="<i4").tobytes()
    return {"n": len(tokens), "ids_z": base64.b64encode(zlib.compress(raw, 9)).decode("ascii"), "text": text}


def ids(record: dict) -> list[int] | None:
    """A trial record's generated token ids (None for records written before outputs were kept)."""
    out = record.get("output")
    if not isinstance(out, dict) or "ids_z" not in out:
        return None
    raw = zlib.decompress(base64.b64decode(out["ids_z"]))
    return np.frombuffer(raw, dtype="<i4").astype(int).tolist()


def text(record: dict) -> str | None:
    out = record.get("output")
    return out.get("text") if isinstance(out, dict) else None


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two outputs differ (the shorter one's end if one is a prefix)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
