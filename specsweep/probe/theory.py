"""What a verify pass should cost, from a GGUF's header alone, and when speculation can pay.

Pure functions. `read_model_bytes` reads the header and tensor table with `gguf.GGUFReader` (which
maps the file lazily: no weight is read) and sorts every tensor's `n_bytes` into classes:

- ``experts``: routed expert tensors of a layer (``blk.N.ffn_*_exps*``); expert e's share is
  ``n_bytes / E`` (E = the tensor's last dimension);
- ``shared``: the shared expert (``*_shexp*``, its gate included), read whole by every pass;
- ``attention`` (``attn_*``), ``ssm`` (``ssm_*``, the gated delta net, with the ``attn_qkv`` and
  ``attn_gate`` projections of a layer that has ``ssm_*`` tensors), ``ffn`` (dense
  feed-forward and the router ``ffn_gate_inp``) and ``other`` per-layer tensors (norms): read whole;
- ``embedding``: ``token_embd`` is a lookup, one row per token: a pass of K tokens reads K rows of
  ``n_bytes / n_vocab`` each, not the table. With tied embeddings the table is the output head and
  is counted there, once, whole;
- ``head``: the output head (``output.weight``), read whole, and the global norms.

Bytes read by one verify pass of K tokens (weights only, every tensor read once per pass, the KV
cache optionally added):

    B(K) = sum over layers [ dense_l + experts_l * U_l(K) / E_l ] + head + K * row_bytes + KV

with U(K) = E (1 - (1 - k/E)^K) the expected number of distinct experts that K tokens route to when
each picks k of E experts uniformly and independently (real routing is correlated, so real unions
are smaller: this is the saturation hypothesis' own optimistic-for-the-hypothesis model). A dense
model has experts_l = 0, so B(K) = B(1) + (K-1) * row_bytes, B(1) to within the few embedding rows.

Saturation: the expected union reaches a fraction f (0.95) of the E experts when
(1 - k/E)^K <= 1 - f, i.e. at K* = ln(1 - f) / ln(1 - k/E) tokens (real-valued: 94.3 for E=256,
k=8, the "about 94" of the hypothesis); ``saturation_tokens`` is the first whole batch size
reaching it, ceil(K*) (95), and ``saturation_approx`` the large-E form (E/k) ln(1/(1-f)) (95.9).

Break-even acceptance: with T(K) the measured time of a K-token verify pass, t1 = T(1) an ordinary
decode step and D(n) the cost of drafting n tokens, a step with draft length n and independent
per-token acceptance a yields E(n, a) = (1 - a^(n+1)) / (1 - a) tokens (n + 1 at a = 1), so
speculation wins iff E(n, a) / (T(n+1) + D(n)) > 1 / t1. E rises from 1 (a = 0) to n + 1 (a = 1),
so the break-even a is unique; it is found by bisection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


from specsweep.errors import SpecsweepError
from specsweep.models import header as gguf_header

SATURATION_FRACTION = 0.95

# bytes per KV-cache element (ggml block sizes: q8_0 is 34 bytes per 32 values, q4_0 18 per 32)
KV_ELEMENT_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


# --- the expert union ---

def expected_union(n_expert: int, n_used: int, n_tokens: float) -> float:
    """Expected distinct experts among n_tokens tokens that each route to n_used of n_expert
    experts uniformly at random: E (1 - (1 - k/E)^K)."""
    if n_expert <= 0 or n_tokens <= 0:
        return 0.0
    if n_used >= n_expert:
        return float(n_expert)
    return n_expert * (1.0 - (1.0 - n_used / n_expert) ** n_tokens)


def saturation_continuous(n_expert: int, n_used: int, fraction: float = SATURATION_FRACTION) -> float:
    """The real K* with expected_union(K*) = fraction * E: ln(1 - f) / ln(1 - k/E)."""
    _check_moe(n_expert, n_used, fraction)
    if n_used >= n_expert:
        return 1.0
    return math.log(1.0 - fraction) / math.log(1.0 - n_used / n_expert)


def saturation_tokens(n_expert: int, n_used: int, fraction: float = SATURATION_FRACTION) -> int:
    """The smallest whole K whose expected union is at least fraction * E (ceil of K*, at least
    1; a single token already reaches it when k >= f E)."""
    _check_moe(n_expert, n_used, fraction)
    k = max(1, math.ceil(saturation_continuous(n_expert, n_used, fraction) - 1e-9))
    while expected_union(n_expert, n_used, k) < fraction * n_expert - 1e-9:  # guard float rounding
        k += 1
    while k > 1 and expected_union(n_expert, n_used, k - 1) >= fraction * n_expert - 1e-9:
        k -= 1
    return k


def saturation_approx(n_expert: int, n_used: int, fraction: float = SATURATION_FRACTION) -> float:
    """The large-E closed form (E/k) ln(1 / (1 - f)): (1 - k/E)^K ~ exp(-K k/E)."""
    _check_moe(n_expert, n_used, fraction)
    return n_expert / n_used * math.log(1.0 / (1.0 - fraction))


def _check_moe(n_expert: int, n_used: int, fraction: float) -> None:
    if n_expert <= 0 or n_used <= 0:
        raise ValueError("saturation needs a MoE: n_expert and n_used > 0")
    if not 0.0 < fraction < 1.0:
        raise ValueError("the saturation fraction must be within (0, 1)")


# --- bytes per pass ---

@dataclass(frozen=True)
class LayerBytes:
    layer: int
    experts: int = 0  # all routed experts' bytes (all E of them)
    n_expert: int = 0  # E of this layer (0: dense layer)
    shared: int = 0
    attention: int = 0
    ssm: int = 0
    ffn: int = 0  # dense feed-forward and the router
    other: int = 0  # norms and anything unclassified
    kv_elements: int = 0  # KV-cache values stored per token position (attention layers)

    @property
    def dense(self) -> int:
        """Bytes every pass reads whole, whatever the routing."""
        return self.shared + self.attention + self.ssm + self.ffn + self.other


@dataclass(frozen=True)
class ModelBytes:
    arch: str
    n_vocab: int
    n_embd: int
    n_expert: int  # header's expert_count (0: dense)
    n_expert_used: int
    layers: tuple[LayerBytes, ...]
    head: int  # output head (token_embd when tied) + global norms etc.
    embd_row: int  # one token-embedding row (0 when tied: the head reads the whole table)
    embd_table: int  # the whole token_embd table (for reference)
    tied: bool
    file_bytes: int = 0
    header: dict = field(default_factory=dict, compare=False)

    @property
    def is_moe(self) -> bool:
        return any(layer.n_expert for layer in self.layers)

    @property
    def kv_elements(self) -> int:
        return sum(layer.kv_elements for layer in self.layers)

    def classes(self) -> dict[str, int]:
        """Total bytes per class (the whole file's tensors, experts all counted)."""
        out = {c: sum(getattr(layer, c) for layer in self.layers)
               for c in ("experts", "shared", "attention", "ssm", "ffn", "other")}
        out["head"] = self.head
        out["embedding_table"] = self.embd_table if not self.tied else 0
        return out


def kv_bytes(mb: ModelBytes, n_positions: int, kv_type: str = "f16") -> float:
    """KV-cache bytes a pass reads attending over n_positions cached positions."""
    return mb.kv_elements * max(n_positions, 0) * KV_ELEMENT_BYTES[kv_type]


def pass_bytes(mb: ModelBytes, n_tokens: int, kv_positions: int = 0, kv_type: str = "f16",
               union: bool = True, measured: dict[int, float] | None = None) -> float:
    """Predicted bytes one pass of n_tokens reads: B(K) above. union=False reads every expert
    (the upper bound every B(K) stays under); `measured`: layer -> the distinct experts a traced
    pass read there, instead of the expected union."""
    total = float(mb.head) + n_tokens * mb.embd_row + kv_bytes(mb, kv_positions, kv_type)
    for layer in mb.layers:
        total += layer.dense
        if layer.n_expert:
            if measured is not None and layer.layer in measured:
                share = measured[layer.layer] / layer.n_expert
            else:
                share = 1.0 if not union else expected_union(layer.n_expert, _used(mb, layer), n_tokens) / layer.n_expert
            total += layer.experts * share
    return total


def bytes_ratio(mb: ModelBytes, n_tokens: int, kv_positions: int = 0, kv_type: str = "f16") -> float:
    """B(K) / B(1)."""
    return pass_bytes(mb, n_tokens, kv_positions, kv_type) / pass_bytes(mb, 1, kv_positions, kv_type)


def _used(mb: ModelBytes, layer: LayerBytes) -> int:
    return min(mb.n_expert_used or layer.n_expert, layer.n_expert)


def _classify(short: str) -> str:
    if gguf_header.is_routed_expert_role(short):
        return "experts"
    if "_shexp" in short:
        return "shared"
    if short.startswith("attn_") and not short.startswith("attn_norm"):
        return "attention"
    if short.startswith("ssm_"):
        return "ssm"
    if short.startswith("ffn_") and not short.startswith("ffn_norm"):
        return "ffn"
    return "other"


def model_bytes_from_tensors(tensors: list[tuple[str, tuple[int, ...], int]], arch: str = "",
                             n_expert: int = 0, n_expert_used: int = 0, file_bytes: int = 0,
                             header: dict | None = None) -> ModelBytes:
    """ModelBytes from (name, ggml shape, n_bytes) triples."""
    per_layer: dict[int, dict] = {}
    head = embd_table = 0
    n_vocab = n_embd = 0
    has_output = any(name == "output.weight" for name, _, _ in tensors)
    for name, shape, n_bytes in tensors:
        if name.startswith("blk."):
            parts = name.split(".", 2)
            try:
                il = int(parts[1])
            except (IndexError, ValueError):
                il, parts = -1, ["", "", name]
            d = per_layer.setdefault(il, {"experts": 0, "n_expert": 0, "shared": 0, "attention": 0,
                                          "ssm": 0, "ffn": 0, "other": 0, "kv_elements": 0})
            short = parts[2]
            cls = _classify(short)
            d[cls] += n_bytes
            if cls == "experts" and len(shape) >= 2:
                d["n_expert"] = max(d["n_expert"], int(shape[-1]))
            if short in ("attn_k.weight", "attn_v.weight") and len(shape) >= 2:
                d["kv_elements"] += int(shape[1])
        elif name == "token_embd.weight":
            embd_table = n_bytes
            n_embd, n_vocab = int(shape[0]), int(shape[1]) if len(shape) > 1 else 1
            if not has_output:
                head += n_bytes  # tied: the head reads the whole table
        else:
            head += n_bytes  # output head, output norm, anything global
    if not embd_table:
        raise ValueError("no token_embd.weight tensor")
    for d in per_layer.values():
        if d["ssm"]:  # a gated-delta-net layer: its attn_qkv/attn_gate are the delta net's projections
            d["ssm"], d["attention"] = d["ssm"] + d["attention"], 0
    layers = tuple(LayerBytes(layer=il, **d) for il, d in sorted(per_layer.items()))
    n_expert = n_expert or max((layer.n_expert for layer in layers), default=0)
    return ModelBytes(arch=arch, n_vocab=n_vocab, n_embd=n_embd, n_expert=n_expert,
                      n_expert_used=n_expert_used, layers=layers, head=head,
                      embd_row=0 if not has_output else embd_table // max(n_vocab, 1),
                      embd_table=embd_table, tied=not has_output, file_bytes=file_bytes,
                      header=dict(header or {}))


HEADER_KEYS = ("context_length", "embedding_length", "block_count", "expert_count", "expert_used_count",
               "expert_feed_forward_length", "expert_shared_feed_forward_length", "feed_forward_length",
               "attention.head_count", "attention.head_count_kv", "attention.key_length",
               "full_attention_interval", "nextn_predict_layers")


def read_model_bytes(path: Path) -> ModelBytes:
    """Header facts and tensor sizes of a GGUF; no tensor data is read."""
    path = Path(path)
    reader = gguf_header.open_gguf(path, path.name)  # one-line errors for missing, truncated or foreign files
    arch = _scalar(reader, "general.architecture") or ""
    header = {"architecture": arch, "name": _scalar(reader, "general.name")}
    for key in HEADER_KEYS:
        value = _scalar(reader, f"{arch}.{key}")
        if value is not None:
            header[key] = value
    tensors = [(t.name, tuple(int(d) for d in t.shape), int(t.n_bytes)) for t in reader.tensors]
    try:
        return model_bytes_from_tensors(tensors, arch, int(header.get("expert_count") or 0),
                                        int(header.get("expert_used_count") or 0), path.stat().st_size, header)
    except ValueError as e:
        raise SpecsweepError(f"{path}: {e}") from None


def _scalar(reader, key: str):
    value = gguf_header.field(reader, key)
    return value if isinstance(value, (str, int, float, bool)) else None


# --- break-even acceptance ---

def expected_tokens(n_draft: int, acceptance: float) -> float:
    """Tokens one speculative step yields with draft length n and i.i.d. per-token acceptance a:
    (1 - a^(n+1)) / (1 - a), n + 1 at a = 1."""
    a = min(max(acceptance, 0.0), 1.0)
    if a >= 1.0:
        return float(n_draft + 1)
    return (1.0 - a ** (n_draft + 1)) / (1.0 - a)


def speedup(n_draft: int, acceptance: float, t_verify: float, t1: float, t_draft: float = 0.0) -> float:
    """Speculative tokens/s over plain decoding: E(n, a) t1 / (T(n+1) + D(n))."""
    return expected_tokens(n_draft, acceptance) * t1 / (t_verify + t_draft)


def break_even_acceptance(n_draft: int, t_verify: float, t1: float, t_draft: float = 0.0,
                          tol: float = 1e-10) -> float | None:
    """The per-token acceptance below which drafting n tokens cannot beat plain decoding:
    the a with E(n, a) / (T(n+1) + D(n)) = 1 / t1. 0.0 when the step wins even at a = 0 (a verify
    plus draft no slower than t1), None when it loses even at a = 1 ((n+1) t1 <= T(n+1) + D(n))."""
    if t1 <= 0 or t_verify <= 0 or t_draft < 0 or n_draft < 0:
        raise ValueError("times must be positive (draft cost non-negative) and n >= 0")
    need = (t_verify + t_draft) / t1  # tokens a step must yield to match plain decoding
    if need < 1.0:
        return 0.0
    if need >= n_draft + 1:
        return None
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if expected_tokens(n_draft, mid) > need:
            hi = mid
        else:
            lo = mid
    return hi
