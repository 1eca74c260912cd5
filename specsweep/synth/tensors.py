"""Which tensors llama.cpp requires for each architecture, with their shapes.

Mirrors `load_arch_tensors` in the vendored llama.cpp (`src/models/qwen3.cpp`, `qwen3moe.cpp`,
`qwen35.cpp`, `qwen35moe.cpp`, `dflash.cpp`, `eagle3.cpp`). Shapes are in ggml order: ne0 (the row
length, the input dimension of a matrix) first.
"""

from __future__ import annotations

from dataclasses import dataclass

from specsweep.synth.cards import ShapeCard

ARCHS = ("qwen3", "qwen3moe", "qwen35", "qwen35moe", "dflash", "eagle3")

# How a tensor's values are drawn; see fill.py.
EMBED = "embed"  # quantised, unit scale: the current token stays visible in the residual stream
MATRIX = "matrix"  # quantised, scale 1/sqrt(fan_in): activations keep unit scale
NORM = "norm"  # F32 ones
DENSE_F32 = "dense_f32"  # small F32 matrices kept unquantised, as real quants keep routers
CONV = "conv"  # F32 depthwise conv kernel of the delta net
SSM_A = "ssm_a"  # F32, negative: the delta net's decay rate
BIAS = "bias"  # F32, small
# F32 [I | 0]: the MTP head's eh_proj passes the next token's embedding and drops the hidden state,
# so the head predicts from the token as an embedding-dominated synthetic target does
PASS_FIRST_HALF = "pass_first_half"


RESIDUAL_OUTPUTS = {"attn_output", "ssm_out", "ffn_down", "ffn_down_exps", "ffn_down_shexp"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # ggml order
    kind: str
    layer: int = -1  # -1: the output head (output, or token_embd when tied); -2: input embeddings

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_output_head(self) -> bool:
        return self.layer == -1 and self.kind in (MATRIX, EMBED)

    @property
    def writes_residual(self) -> bool:
        """A block's output projection: what it returns is added to the residual stream."""
        return self.layer >= 0 and self.name.split(".")[2] in RESIDUAL_OUTPUTS


def tensor_specs(card: ShapeCard) -> list[TensorSpec]:
    if card.arch not in ARCHS:
        raise ValueError(f"unknown architecture {card.arch!r}")
    if card.arch == "dflash":
        return _dflash(card) + _dspark_head(card)
    if card.arch == "eagle3":
        return _eagle3(card)
    c = card
    # A tied head is the embedding itself: at unit scale every token would predict itself.
    specs = [TensorSpec("token_embd.weight", (c.n_embd, c.n_vocab), MATRIX if c.tied_embeddings else EMBED,
                        layer=-1 if c.tied_embeddings else -2)]
    specs.append(TensorSpec("output_norm.weight", (c.n_embd,), NORM))
    if not c.tied_embeddings:
        specs.append(TensorSpec("output.weight", (c.n_embd, c.n_vocab), MATRIX))
    for il in range(c.n_layer):
        specs += _block(c, il)
    for il in range(c.n_layer, c.n_layer + c.n_mtp):  # qwen35/qwen35moe `load_block_mtp`
        specs += _block(c, il)
        specs += [
            TensorSpec(f"blk.{il}.nextn.eh_proj.weight", (2 * c.n_embd, c.n_embd), PASS_FIRST_HALF, il),
            TensorSpec(f"blk.{il}.nextn.enorm.weight", (c.n_embd,), NORM, il),
            TensorSpec(f"blk.{il}.nextn.hnorm.weight", (c.n_embd,), NORM, il),
        ]
    return specs


def _dflash(c: ShapeCard) -> list[TensorSpec]:
    """`llama_model_dflash::load_arch_tensors` (src/models/dflash.cpp) for a full-vocabulary
    drafter: no token_embd or output, which llama.cpp takes from the target's context."""
    specs = [
        TensorSpec("fc.weight", (len(c.target_layers) * c.n_embd, c.n_embd), MATRIX),
        TensorSpec("enc.output_norm.weight", (c.n_embd,), NORM),
        TensorSpec("output_norm.weight", (c.n_embd,), NORM),
    ]
    q_dim, kv_dim = c.head_dim * c.n_head, c.head_dim * c.n_head_kv
    for il in range(c.n_layer):
        def t(name: str, shape: tuple[int, ...], kind: str = MATRIX) -> TensorSpec:
            return TensorSpec(f"blk.{il}.{name}", shape, kind, il)
        specs += [
            t("attn_norm.weight", (c.n_embd,), NORM),
            t("attn_q.weight", (c.n_embd, q_dim)),
            t("attn_k.weight", (c.n_embd, kv_dim)),
            t("attn_v.weight", (c.n_embd, kv_dim)),
            t("attn_output.weight", (q_dim, c.n_embd)),
            t("attn_q_norm.weight", (c.head_dim,), NORM),
            t("attn_k_norm.weight", (c.head_dim,), NORM),
            t("ffn_norm.weight", (c.n_embd,), NORM),
            t("ffn_gate.weight", (c.n_embd, c.n_ff)),
            t("ffn_up.weight", (c.n_embd, c.n_ff)),
            t("ffn_down.weight", (c.n_ff, c.n_embd)),
        ]
    return specs


# layer ids of the drafter tensors outside any block: never the perturbable output head (-1)
_DRAFTER_INPUT, _DRAFTER_HEAD = -2, -3


def _dspark_head(c: ShapeCard) -> list[TensorSpec]:
    """DSpark's Markov and confidence heads (`llama_model_dflash::load_arch_tensors`): markov_w1
    (rank x vocab, rows gathered by the previous token, unit scale like an embedding), markov_w2
    (rank -> vocab, the bias added to the draft logits) and conf_proj over [hidden | w1 row].
    Nothing for a plain DFlash card."""
    if not c.is_dspark:
        return []
    r = c.markov_rank
    specs = [
        TensorSpec("markov_w1.weight", (r, c.n_vocab), EMBED, _DRAFTER_INPUT),
        TensorSpec("markov_w2.weight", (r, c.n_vocab), MATRIX, _DRAFTER_HEAD),
    ]
    if c.conf_head:
        specs += [
            TensorSpec("conf_proj.weight", (c.n_embd + r, 1), DENSE_F32, _DRAFTER_HEAD),
            TensorSpec("conf_proj.bias", (1,), BIAS, _DRAFTER_HEAD),
        ]
    return specs


def _eagle3(c: ShapeCard) -> list[TensorSpec]:
    """`llama_model_eagle3::load_arch_tensors` (src/models/eagle3.cpp), full vocabulary (no d2t),
    norm_before_fc off (no enc.output_norm): fc over the 3 target layers' features, one decoder
    layer whose q/k/v read [normed token embedding | normed g] (2 x n_embd) and whose attn_norm_2
    is the hidden norm of g, and the output norm. token_embd/output only with own_embeddings.
    fc reads layers x target_hidden_size as llama.cpp sizes it (which then insists on 3 layers)."""
    specs = [TensorSpec("fc.weight", (len(c.target_layers) * c.n_embd_target, c.n_embd), MATRIX, _DRAFTER_INPUT)]
    if c.own_embeddings:
        specs.append(TensorSpec("token_embd.weight", (c.n_embd, c.n_vocab), EMBED, -2))
    specs.append(TensorSpec("output_norm.weight", (c.n_embd,), NORM))
    if c.own_embeddings:
        specs.append(TensorSpec("output.weight", (c.n_embd, c.n_vocab), MATRIX))
    q_dim, kv_dim, attn_in = c.head_dim * c.n_head, c.head_dim * c.n_head_kv, 2 * c.n_embd
    for il in range(c.n_layer):
        def t(name: str, shape: tuple[int, ...], kind: str = MATRIX) -> TensorSpec:
            return TensorSpec(f"blk.{il}.{name}", shape, kind, il)
        specs += [
            t("attn_norm.weight", (c.n_embd,), NORM),
            t("attn_norm_2.weight", (c.n_embd,), NORM),
            t("attn_q.weight", (attn_in, q_dim)),
            t("attn_k.weight", (attn_in, kv_dim)),
            t("attn_v.weight", (attn_in, kv_dim)),
            t("attn_output.weight", (q_dim, c.n_embd)),
            t("ffn_norm.weight", (c.n_embd,), NORM),
            t("ffn_gate.weight", (c.n_embd, c.n_ff)),
            t("ffn_up.weight", (c.n_embd, c.n_ff)),
            t("ffn_down.weight", (c.n_ff, c.n_embd)),
        ]
    return specs


def _block(c: ShapeCard, il: int) -> list[TensorSpec]:
    def t(name: str, shape: tuple[int, ...], kind: str = MATRIX) -> TensorSpec:
        return TensorSpec(f"blk.{il}.{name}", shape, kind, il)

    out = [t("attn_norm.weight", (c.n_embd,), NORM)]
    q_dim, kv_dim = c.head_dim * c.n_head, c.head_dim * c.n_head_kv
    hybrid = c.arch in ("qwen35", "qwen35moe")

    if hybrid and c.is_recurrent_layer(il):
        key_dim = c.ssm_d_state * c.ssm_n_group
        value_dim = c.ssm_d_state * c.ssm_dt_rank
        out += [
            t("attn_qkv.weight", (c.n_embd, 2 * key_dim + value_dim)),
            t("attn_gate.weight", (c.n_embd, value_dim)),
            t("ssm_conv1d.weight", (c.ssm_d_conv, 2 * key_dim + value_dim), CONV),
            t("ssm_dt.bias", (c.ssm_dt_rank,), BIAS),
            t("ssm_a", (c.ssm_dt_rank,), SSM_A),
            t("ssm_beta.weight", (c.n_embd, c.ssm_dt_rank), DENSE_F32),
            t("ssm_alpha.weight", (c.n_embd, c.ssm_dt_rank), DENSE_F32),
            t("ssm_norm.weight", (c.ssm_d_state,), NORM),
            t("ssm_out.weight", (value_dim, c.n_embd)),
        ]
    else:
        # Qwen3.5's full-attention layers project a per-head output gate together with q.
        out += [
            t("attn_q.weight", (c.n_embd, q_dim * (2 if hybrid else 1))),
            t("attn_k.weight", (c.n_embd, kv_dim)),
            t("attn_v.weight", (c.n_embd, kv_dim)),
            t("attn_output.weight", (q_dim, c.n_embd)),
            t("attn_q_norm.weight", (c.head_dim,), NORM),
            t("attn_k_norm.weight", (c.head_dim,), NORM),
        ]

    out.append(t("post_attention_norm.weight" if hybrid else "ffn_norm.weight", (c.n_embd,), NORM))

    if c.is_moe:
        out += [
            t("ffn_gate_inp.weight", (c.n_embd, c.n_expert), DENSE_F32),
            t("ffn_gate_exps.weight", (c.n_embd, c.n_ff_exp, c.n_expert)),
            t("ffn_up_exps.weight", (c.n_embd, c.n_ff_exp, c.n_expert)),
            t("ffn_down_exps.weight", (c.n_ff_exp, c.n_embd, c.n_expert)),
        ]
        if c.n_ff_shexp:
            out += [
                t("ffn_gate_inp_shexp.weight", (c.n_embd,), DENSE_F32),
                t("ffn_gate_shexp.weight", (c.n_embd, c.n_ff_shexp)),
                t("ffn_up_shexp.weight", (c.n_embd, c.n_ff_shexp)),
                t("ffn_down_shexp.weight", (c.n_ff_shexp, c.n_embd)),
            ]
    else:
        out += [
            t("ffn_gate.weight", (c.n_embd, c.n_ff)),
            t("ffn_up.weight", (c.n_embd, c.n_ff)),
            t("ffn_down.weight", (c.n_ff, c.n_embd)),
        ]
    return out
