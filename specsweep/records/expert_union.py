"""A traced trial's expert union, as its record keeps it (`experts`), and read back.

One row per target pass after the prompt (prefill passes are left out), one column per MoE layer:
how many distinct experts that layer's router chose for the pass's tokens. Kept as uint16, zlib,
base64 (a 1000-token trial of a 40-layer model verifying 96-token drafts is a few kB), beside what
turns it into bytes: each layer's routed-expert bytes (all E experts of the layer, so a pass reads
union / E of them). A pass's kind: "v" verified a draft, "p" a plain one-token step, "r" re-decoded
accepted tokens after a checkpoint restore.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass

import numpy as np

KINDS = {"verify": "v", "plain": "p", "redecode": "r"}
HOW = ("replayed after the trial in a context of its own with llama.cpp's eval callback reading "
       "ffn_moe_topk-<layer> (never timed)")


def block(kinds: list[str], n_tokens: list[int], n_distinct: list[int], unions: np.ndarray, layers: list[int],
          n_expert: int, n_used: int, expert_bytes: list[int], pass_s: list[float], outputs_checked: int,
          mismatches: int, replay_s: float) -> dict:
    """The record's `experts` block. `unions`: (passes, layers) distinct experts per pass and layer;
    `pass_s`: the timed trial's seconds for each of these passes (decode and sync, as its loop
    timed them), or [] when they do not line up one to one."""
    raw = np.asarray(unions, dtype="<u2").reshape(len(kinds), len(layers)).tobytes()
    return {"how": HOW, "n_expert": n_expert, "n_expert_used": n_used, "layers": list(layers),
            "expert_bytes": list(expert_bytes),
            "passes": {"kind": "".join(KINDS[k] for k in kinds), "n_tokens": list(n_tokens),
                       "n_distinct_tokens": list(n_distinct),
                       "verify_ms": [round(t * 1e3, 4) for t in pass_s] if len(pass_s) == len(kinds) else None,
                       "union_z": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")},
            "outputs_checked": outputs_checked, "mismatches": mismatches, "replay_s": round(replay_s, 3)}


@dataclass
class TracedUnion:
    """One trial's traced passes: `unions[i, j]` distinct experts of pass i in layer j."""
    n_expert: int
    n_used: int
    layers: list[int]
    expert_bytes: np.ndarray  # per layer, all experts
    kinds: str
    n_tokens: np.ndarray
    n_distinct: np.ndarray
    unions: np.ndarray
    verify_ms: np.ndarray | None  # the timed trial's time of each pass
    mismatches: int
    outputs_checked: int

    @property
    def coverage(self) -> np.ndarray:
        """Per pass: the share of a layer's experts read, averaged over the MoE layers."""
        return self.unions.mean(axis=1) / self.n_expert if self.unions.size else np.zeros(len(self.kinds))

    @property
    def bytes_read(self) -> np.ndarray:
        """Per pass: routed-expert bytes read, sum over layers of bytes x union / E."""
        return self.unions @ self.expert_bytes / self.n_expert if self.unions.size else np.zeros(len(self.kinds))

    def select(self, kinds: str = "v") -> np.ndarray:
        """Indices of the passes of these kinds."""
        return np.array([i for i, k in enumerate(self.kinds) if k in kinds], dtype=int)


def read(record: dict) -> TracedUnion | None:
    """A trial record's traced union, or None when the trial was not traced."""
    b = record.get("experts")
    if not isinstance(b, dict) or "passes" not in b:
        return None
    p = b["passes"]
    layers = list(b["layers"])
    raw = np.frombuffer(zlib.decompress(base64.b64decode(p["union_z"])), dtype="<u2")
    unions = raw.reshape(len(p["kind"]), len(layers)).astype(float)
    return TracedUnion(int(b["n_expert"]), int(b["n_expert_used"]), layers,
                       np.asarray(b["expert_bytes"], dtype=float), p["kind"], np.asarray(p["n_tokens"]),
                       np.asarray(p["n_distinct_tokens"]), unions,
                       None if p.get("verify_ms") is None else np.asarray(p["verify_ms"], dtype=float),
                       int(b.get("mismatches", 0)),
                       int(b.get("outputs_checked", 0)))
