"""Shape cards: the published shapes of the models specsweep studies, and a tiny scale of each.

A full-scale card copies the model's Hugging Face `config.json` (hidden size, layers, heads, experts,
gated-delta-net dimensions, vocabulary size) so that a random-weight GGUF written from it has the
same tensors, bytes and kernels as the real file: timing-true, since speed does not depend on the
weight values. The tiny scale keeps the architecture and the layer pattern and shrinks every
dimension so that CI can run the real llama.cpp on the CPU in milliseconds per token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# tiny256: the tiny layout with every matrix row a multiple of 256 weights (QK_K), so that K-quant
# types and mixes (synth/quants.py) store real K-quant blocks; only cards that define it have it
SCALES = ("full", "tiny", "tiny256")


@dataclass(frozen=True)
class ShapeCard:
    name: str
    arch: str  # llama.cpp architecture name (general.architecture)
    family: str  # vocabulary family: cards of one family share their token list
    source: str  # where the full shape comes from
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    rope_base: float
    n_rot: int = 0  # rotary dims; 0 means the whole head
    n_ff: int = 0  # dense feed-forward width
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0  # shared expert width (qwen35moe)
    # gated delta net (qwen35, qwen35moe): one full-attention layer every `full_attn_interval`
    ssm_d_conv: int = 0
    ssm_d_state: int = 0  # head dim of k/v in the delta net
    ssm_n_group: int = 0  # k heads
    ssm_dt_rank: int = 0  # v heads
    full_attn_interval: int = 0
    rope_sections: tuple[int, ...] = ()
    tied_embeddings: bool = False
    rms_eps: float = 1e-6
    # multi-token-prediction (NextN) layers after the trunk: Qwen3.5/3.6 ship one
    n_mtp: int = 0
    # DFlash drafters (arch "dflash"): the target layers whose inputs condition the drafter
    # (llama.cpp's numbering, HF target_layer_ids + 1) and the trained block size
    target_layers: tuple[int, ...] = ()
    block_size: int = 0
    target: str = ""  # the card of the target a drafter is made for
    mask_token_id: int = -1  # the drafter's noise token (tokenizer.ggml.mask_token_id); -1: none
    # sliding-window attention of a DFlash drafter: the window and, per layer, whether it slides
    # (llama.cpp's `dflash.attention.sliding_window` and `.sliding_window_pattern`); 0: all full
    swa_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    # EAGLE-3 drafters (arch "eagle3"): exactly 3 `target_layers` (a layer's input; the target's
    # layer count means its final hidden state), read as 3 x target_n_embd features by `fc`.
    # own_embeddings: its own token_embd/output (full vocabulary); without them llama.cpp borrows
    # the target's through ctx_other, as shared-vocabulary EAGLE-3 drafters do.
    target_n_embd: int = 0  # eagle3.target_hidden_size; 0: the card's n_embd
    own_embeddings: bool = False
    # DSpark drafters (arch "dflash" with a Markov head): markov_w1/markov_w2 of this rank, an
    # optional confidence head (conf_proj) and whether block slot 0 is a prediction
    # (dflash.sample_from_anchor; false: a bonus anchor, as EAGLE-3-style exports have)
    markov_rank: int = 0
    conf_head: bool = False
    sample_from_anchor: bool = True
    tiny: dict = field(default_factory=dict, compare=False, repr=False)
    tiny256: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.arch != "dflash":
            return
        if not 0 <= self.mask_token_id < self.n_vocab:
            raise ValueError(f"{self.name}: mask token {self.mask_token_id} is outside the {self.n_vocab} tokens")
        if self.swa_window and len(self.swa_layers) != self.n_layer:
            raise ValueError(f"{self.name}: {len(self.swa_layers)} sliding-window flags for {self.n_layer} layers")

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    @property
    def is_hybrid(self) -> bool:
        return self.full_attn_interval > 0

    @property
    def is_eagle3(self) -> bool:
        return self.arch == "eagle3"

    @property
    def is_dspark(self) -> bool:
        return self.arch == "dflash" and self.markov_rank > 0

    @property
    def n_embd_target(self) -> int:
        """The hidden size of the target whose features a drafter reads."""
        return self.target_n_embd or self.n_embd

    @property
    def ssm_d_inner(self) -> int:
        return self.ssm_d_state * self.ssm_dt_rank

    def is_recurrent_layer(self, il: int) -> bool:
        # llama.cpp's default when the GGUF has no explicit recurrent-layer list; the MTP layers
        # after the trunk are full attention
        return self.is_hybrid and il < self.n_layer and (il + 1) % self.full_attn_interval != 0

    @property
    def scales(self) -> tuple[str, ...]:
        return ("full", "tiny") + (("tiny256",) if self.tiny256 else ())

    def at_scale(self, scale: str) -> "ShapeCard":
        if scale not in self.scales:
            raise ValueError(f"{self.name} has no scale {scale!r} (it has {', '.join(self.scales)})")
        if scale == "full":
            return self
        return dataclasses.replace(self, **getattr(self, scale), tiny={}, tiny256={})


# Tiny vocabularies: each family keeps its own size, so a cross-family draft is refused in CI
# exactly as 151936 vs 248320 is refused at full size.
_TINY_VOCAB = {"qwen3": 1536, "qwen35": 2048}

_TINY_HYBRID = dict(
    n_embd=128, n_layer=4, n_head=4, n_head_kv=2, head_dim=64, n_rot=16, rope_sections=(3, 3, 2, 0),
    ssm_d_conv=4, ssm_d_state=32, ssm_n_group=2, ssm_dt_rank=4, n_ctx_train=8192,
    n_vocab=_TINY_VOCAB["qwen35"],
)

_CARDS = [
    ShapeCard(
        name="qwen3.6-35b-a3b", arch="qwen35moe", family="qwen35",
        source="Qwen/Qwen3.6-35B-A3B config.json (same text layout as Qwen3.5-35B-A3B)",
        n_vocab=248320, n_embd=2048, n_layer=40, n_head=16, n_head_kv=2, head_dim=256, n_rot=64,
        n_ctx_train=262144, rope_base=10_000_000.0, rope_sections=(11, 11, 10, 0),
        n_expert=256, n_expert_used=8, n_ff_exp=512, n_ff_shexp=512,
        ssm_d_conv=4, ssm_d_state=128, ssm_n_group=16, ssm_dt_rank=32, full_attn_interval=4,
        tiny=dict(_TINY_HYBRID, n_expert=16, n_expert_used=4, n_ff_exp=64, n_ff_shexp=64),
        # rows of 256: hidden, q heads x head dim, delta-net value dim (64 x 4), expert widths
        tiny256=dict(_TINY_HYBRID, n_embd=256, ssm_d_state=64, n_expert=16, n_expert_used=4, n_ff_exp=256,
                     n_ff_shexp=256),
    ),
    ShapeCard(
        name="qwen3.6-27b", arch="qwen35", family="qwen35",
        source="Qwen/Qwen3.6-27B config.json (same text layout as Qwen3.5-27B)",
        n_vocab=248320, n_embd=5120, n_layer=64, n_head=24, n_head_kv=4, head_dim=256, n_rot=64,
        n_ctx_train=262144, rope_base=10_000_000.0, rope_sections=(11, 11, 10, 0), n_ff=17408,
        ssm_d_conv=4, ssm_d_state=128, ssm_n_group=16, ssm_dt_rank=48, full_attn_interval=4,
        tiny=dict(_TINY_HYBRID, n_ff=256),
    ),
    ShapeCard(
        name="qwen3.5-0.8b", arch="qwen35", family="qwen35",
        source="Qwen/Qwen3.5-0.8B config.json (the vocab-matched draft)",
        n_vocab=248320, n_embd=1024, n_layer=24, n_head=8, n_head_kv=2, head_dim=256, n_rot=64,
        n_ctx_train=262144, rope_base=10_000_000.0, rope_sections=(11, 11, 10, 0), n_ff=3584,
        ssm_d_conv=4, ssm_d_state=128, ssm_n_group=16, ssm_dt_rank=16, full_attn_interval=4,
        tied_embeddings=True,
        tiny=dict(_TINY_HYBRID, n_embd=64, n_head=2, n_head_kv=1, ssm_dt_rank=2, n_ff=128),
    ),
    ShapeCard(
        name="qwen3.5-122b-a10b", arch="qwen35moe", family="qwen35",
        source="Qwen/Qwen3.5-122B-A10B config.json (the 10B-active MoE)",
        n_vocab=248320, n_embd=3072, n_layer=48, n_head=32, n_head_kv=2, head_dim=256, n_rot=64,
        n_ctx_train=262144, rope_base=10_000_000.0, rope_sections=(11, 11, 10, 0),
        n_expert=256, n_expert_used=8, n_ff_exp=1024, n_ff_shexp=1024,
        ssm_d_conv=4, ssm_d_state=128, ssm_n_group=16, ssm_dt_rank=64, full_attn_interval=4,
        tiny=dict(_TINY_HYBRID, n_embd=192, n_expert=32, n_expert_used=4, n_ff_exp=96, n_ff_shexp=96),
    ),
    ShapeCard(
        name="qwen3-30b-a3b", arch="qwen3moe", family="qwen3",
        source="Qwen/Qwen3-30B-A3B config.json (attention-only MoE)",
        n_vocab=151936, n_embd=2048, n_layer=48, n_head=32, n_head_kv=4, head_dim=128,
        n_ctx_train=40960, rope_base=1_000_000.0, n_expert=128, n_expert_used=8, n_ff_exp=768,
        tiny=dict(n_vocab=_TINY_VOCAB["qwen3"], n_embd=128, n_layer=4, n_head=4, n_head_kv=2,
                  head_dim=32, n_ctx_train=8192, n_expert=16, n_expert_used=4, n_ff_exp=64),
    ),
    ShapeCard(
        name="qwen3-0.6b", arch="qwen3", family="qwen3",
        source="Qwen/Qwen3-0.6B config.json (dense; the published wrong-vocabulary draft)",
        n_vocab=151936, n_embd=1024, n_layer=28, n_head=16, n_head_kv=8, head_dim=128, n_ff=3072,
        n_ctx_train=40960, rope_base=1_000_000.0, tied_embeddings=True,
        tiny=dict(n_vocab=_TINY_VOCAB["qwen3"], n_embd=64, n_layer=4, n_head=2, n_head_kv=1,
                  head_dim=32, n_ff=128, n_ctx_train=8192),
    ),
    # DFlash block-diffusion drafters: Qwen3-style dense blocks that read the target's hidden states
    # through `fc` and borrow its token embeddings and output head, so their width is the target's.
    # Two revisions of z-lab/Qwen3.6-35B-A3B-DFlash. The card names are file names of recorded
    # results, so the April layout keeps the plain name and each later revision gets its month.
    #
    # April 2026: no config could be read when this card was written; the layer count and widths
    # are estimated from its ~905 MB bf16 file (about 450 M parameters: 8 full-attention blocks of
    # hidden 2048, FFN 6144, 32 query / 4 KV heads of 128, and the fc projection), and the five
    # target layers spread over the 40 as z-lab's drafters do. Block size 16 is DFlash's default.
    # Mask token 248070: the id z-lab's Qwen3.5/3.6 drafters name in dflash_config.mask_token_id
    # (it was the family's last token, 248319, until the June revision was added; only the header
    # changed).
    ShapeCard(
        name="qwen3.6-35b-a3b-dflash", arch="dflash", family="qwen35", target="qwen3.6-35b-a3b",
        source="April 2026 revision, estimated from z-lab/Qwen3.6-35B-A3B-DFlash's file size (no config read)",
        n_vocab=248320, n_embd=2048, n_layer=8, n_head=32, n_head_kv=4, head_dim=128, n_ff=6144,
        n_ctx_train=262144, rope_base=10_000_000.0, target_layers=(2, 11, 20, 29, 38), block_size=16,
        mask_token_id=248070,
        # tiny: the family's last token, as before (the tiny vocabulary has 2048 tokens)
        tiny=dict(n_vocab=_TINY_VOCAB["qwen35"], n_embd=128, n_layer=2, n_head=4, n_head_kv=2, head_dim=32,
                  n_ff=256, n_ctx_train=8192, target_layers=(1, 3), mask_token_id=_TINY_VOCAB["qwen35"] - 1),
    ),
    # June 2026: from the revision's config.json as reported to us: 6 blocks, 5 with sliding-window
    # attention (window 4096) and 1 full, 32 query / 8 KV heads of 128, FFN 6144, hidden 2048, block
    # size 16, target_layer_ids [1, 6, 11, 16, 22, 27, 32, 37] (HF numbering; llama.cpp's converter
    # adds 1), mask token 248077. Which layer is the full one was not in what we read: z-lab's
    # Qwen3.6 drafters slide in layers 0..n-2 and attend fully in the last (z-lab/dflash issue 126,
    # the Qwen3.6-27B drafter's [S, S, S, S, F]), so the last layer here is full. llama.cpp's
    # converter also gives a drafter of an M-RoPE target (Qwen3.5/3.6) degenerate rope sections
    # [head_dim/2, 0, 0, 0], so this card writes them too.
    ShapeCard(
        name="qwen3.6-35b-a3b-dflash-jun26", arch="dflash", family="qwen35", target="qwen3.6-35b-a3b",
        source="June 2026 revision of z-lab/Qwen3.6-35B-A3B-DFlash (config.json; full-attention layer "
               "inferred: the last)",
        n_vocab=248320, n_embd=2048, n_layer=6, n_head=32, n_head_kv=8, head_dim=128, n_ff=6144,
        n_ctx_train=262144, rope_base=10_000_000.0, rope_sections=(64, 0, 0, 0),
        target_layers=(2, 7, 12, 17, 23, 28, 33, 38), block_size=16, mask_token_id=248077,
        swa_window=4096, swa_layers=(True, True, True, True, True, False),
        # tiny: a window shorter than the test prompts, so that sliding drops keys; a mask token other
        # than the last, so that a test sees the card's id rather than a default
        tiny=dict(n_vocab=_TINY_VOCAB["qwen35"], n_embd=128, n_layer=3, n_head=4, n_head_kv=1, head_dim=32,
                  n_ff=256, n_ctx_train=8192, rope_sections=(16, 0, 0, 0), target_layers=(1, 2, 3),
                  mask_token_id=_TINY_VOCAB["qwen35"] - 8, swa_window=32, swa_layers=(True, True, False)),
    ),
]

# Drafters that read the 35B-A3B's hidden states through other llama.cpp archs than DFlash.
_CARDS += [
    # EAGLE-3 (arch "eagle3"): one Llama-style decoder layer whose attention reads [normed token
    # embedding | normed fused features] (2 x 2048), fed by fc (3 x 2048 -> 2048). The shape is
    # SpecForge's EAGLE-3 recipe for Qwen3-30B-A3B, the same 2048-wide MoE family (configs/
    # qwen3-30B-eagle3.json: 32 heads of 128, 4 KV heads, FFN 6144); a published Qwen3.5-35B-A3B
    # EAGLE-3 (Ichigec/a1-agents-eagle3-speculator, 0.6 B with its embeddings and an 8192-token head)
    # has this shape's parameter count. The target layers are llama.cpp's converter default for
    # 40 layers, (2, 20, 37). Without --own-embeddings it has no token_embd/output and llama.cpp
    # borrows the target's (a shared-vocabulary drafter); the tiny card reads layer 4 == n_layer,
    # the target's final hidden state, so that path is exercised too.
    ShapeCard(
        name="qwen3.6-35b-a3b-eagle3", arch="eagle3", family="qwen35", target="qwen3.6-35b-a3b",
        source="SpecForge configs/qwen3-30B-eagle3.json shape (EAGLE-3 for the 2048-wide Qwen3 MoE); "
               "no Qwen3.6-35B-A3B EAGLE-3 config read here",
        n_vocab=248320, n_embd=2048, n_layer=1, n_head=32, n_head_kv=4, head_dim=128, n_ff=6144,
        n_ctx_train=262144, rope_base=10_000_000.0, target_layers=(2, 20, 37),
        tiny=dict(n_vocab=_TINY_VOCAB["qwen35"], n_embd=128, n_head=4, n_head_kv=2, head_dim=32, n_ff=256,
                  n_ctx_train=8192, target_layers=(1, 2, 4)),
    ),
    # DSpark (arch "dflash" + markov_w1/markov_w2 and a confidence head): DFlash blocks with a
    # semi-autoregressive Markov bias on the draft logits. The blocks are SpecForge's 35B-A3B DFlash
    # config (configs/qwen3.5-35b-a3b-dflash.json: 5 layers of 2048, 16 heads of 256, 2 KV heads,
    # FFN 6144, target layers 3/11/19/27/35, here + 1 as llama.cpp counts them); the head is
    # SpecForge's Qwen3.6-27B DSpark (configs/qwen3.6-27b-dspark.json: Markov rank 256, confidence
    # head, DFlash-lineage block that samples from the anchor). No 35B-A3B DSpark was published.
    ShapeCard(
        name="qwen3.6-35b-a3b-dspark", arch="dflash", family="qwen35", target="qwen3.6-35b-a3b",
        source="SpecForge qwen3.5-35b-a3b-dflash.json blocks + qwen3.6-27b-dspark.json head (an estimate: "
               "no 35B-A3B DSpark config published)",
        n_vocab=248320, n_embd=2048, n_layer=5, n_head=16, n_head_kv=2, head_dim=256, n_ff=6144,
        n_ctx_train=262144, rope_base=10_000_000.0, target_layers=(4, 12, 20, 28, 36), block_size=16,
        markov_rank=256, conf_head=True, sample_from_anchor=True,
        mask_token_id=248070,  # z-lab's Qwen3.5/3.6 DFlash mask id; a DSpark export's own is not published
        tiny=dict(n_vocab=_TINY_VOCAB["qwen35"], n_embd=128, n_layer=2, n_head=4, n_head_kv=2, head_dim=32,
                  n_ff=256, n_ctx_train=8192, target_layers=(1, 3), markov_rank=32,
                  mask_token_id=_TINY_VOCAB["qwen35"] - 1),
    ),
]

CARDS: dict[str, ShapeCard] = {c.name: c for c in _CARDS}


# recipe options that choose a drafter variant (synth/writer.py Recipe; None keeps the card's value)
DRAFTER_OPTIONS = ("conf_head", "sample_from_anchor", "own_embeddings")


def option_error(card: ShapeCard, conf_head: bool | None = None, sample_from_anchor: bool | None = None,
                 own_embeddings: bool | None = None) -> str | None:
    """Why a drafter recipe option does not apply to `card` (None: it does, or none is given)."""
    if (conf_head is not None or sample_from_anchor is not None) and not card.is_dspark:
        return f"conf_head and sample_from_anchor shape a DSpark drafter; {card.name} is not one"
    if own_embeddings is not None and not card.is_eagle3:
        return f"own_embeddings shapes an EAGLE-3 drafter; {card.name} is not one"
    return None


def card_help() -> str:
    return "; ".join(f"{c.name} ({c.arch})" for c in _CARDS)
