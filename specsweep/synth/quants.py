"""Per-tensor quantization mixes: which type each tensor of a synthetic model is stored in.

A uniform `wtype` stores every matrix in one type. Real files are mixes: Unsloth's UD-Q4_K_XL of
Qwen3.6-35B-A3B keeps attention, the gated delta net, the shared expert and both embeddings at
Q8_0 and only the routed experts at 4-6 bits. A mix here names the type of each tensor by its role
(and layer), so a synthetic model runs the kernels the real file runs and weighs what it weighs.

Where `ud-q4_k_xl` comes from (no complete public tensor listing of the file was found):
- Types by role: a public CUDA kernel benchmark (for mistral.rs quant kernels) whose cases are the
  tensors of Qwen3.6-35B-A3B-UD-Q4_K_XL (routed gate/up Q4_K, routed down Q5_K and Q6_K; attention,
  the delta net's qkv/gate/out, the shared expert and lm_head Q8_0) and a runtime's pull request that had to
  add Q5_K because of it (gittensor-ai-lab/sparkinfer#224: down_exps Q5_K, gate/up Q4_K).
- token_embd Q8_0: the 3090 audit's load log puts 515 MiB of model on the host, which is where
  llama.cpp keeps the input embedding; 2048 x 248320 at Q8_0 is 515.3 MiB (Q6_K: 397.9).
- ssm_alpha/ssm_beta Q8_0: llama.cpp's quantizer quantizes them for qwen35moe (src/llama-quant.cpp
  excludes them only for GLM5-next); routers, norms and the conv kernel stay F32, as there.
- How many layers keep the down projection at Q6_K is not public: 6 of 40 make the GPU side weigh
  the audit's 20,798 MiB (20,792 MiB here; none: 20,588, llama.cpp's Q4_K_M choice of layers, 20
  of 40: 21,268). Which six is a guess: the first and last three, where llama.cpp's own
  use_more_bits also spends more bits. Size is unaffected by the choice; speed barely (6 of 40
  down projections run the Q6_K kernel instead of Q5_K's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gguf import GGMLQuantizationType as Q

from specsweep.synth.cards import ShapeCard
from specsweep.synth.fill import fitting_type, storage_type
from specsweep.synth.tensors import DENSE_F32, EMBED, MATRIX, TensorSpec


@dataclass(frozen=True)
class QuantMix:
    name: str
    file_type: int  # llama_ftype written as general.file_type
    archs: tuple[str, ...]  # the architectures whose tensor roles it names
    source: str
    choose: Callable[[TensorSpec, ShapeCard], Q]  # the type asked for; row fit is checked after


def role(spec: TensorSpec) -> str:
    """`ffn_down_exps` for blk.7.ffn_down_exps.weight, `token_embd` for token_embd.weight."""
    parts = spec.name.split(".")
    return parts[2] if parts[0] == "blk" else parts[0]


def _ud_q4_k_xl(spec: TensorSpec, card: ShapeCard) -> Q:
    r = role(spec)
    if spec.kind == DENSE_F32:
        return Q.Q8_0 if r in ("ssm_alpha", "ssm_beta") else Q.F32
    if spec.kind not in (MATRIX, EMBED):
        return Q.F32
    if r in ("ffn_gate_exps", "ffn_up_exps"):
        return Q.Q4_K
    if r == "ffn_down_exps":
        # the first and last k trunk layers: 3 of 40, and at least 1, so a tiny card has both types
        k = max(1, round(3 * card.n_layer / 40))
        return Q.Q6_K if spec.layer < k or card.n_layer - k <= spec.layer < card.n_layer else Q.Q5_K
    return Q.Q8_0


MIXES: dict[str, QuantMix] = {
    m.name: m
    for m in [
        QuantMix(
            "ud-q4_k_xl", 15, ("qwen35moe",),  # 15: LLAMA_FTYPE_MOSTLY_Q4_K_M ("Q4_K - Medium")
            "unsloth/Qwen3.6-35B-A3B-GGUF UD-Q4_K_XL: types by role from public listings, token_embd from "
            "the 3090 audit's host buffer, the number of Q6_K down layers fitted to its GPU buffer",
            _ud_q4_k_xl,
        ),
    ]
}


def mix_error(card: ShapeCard, quant: str) -> str | None:
    """Why mix `quant` does not apply to `card` (None: it does)."""
    if quant not in MIXES:
        return f"unknown quantization mix {quant!r} (one of {', '.join(MIXES)})"
    mix = MIXES[quant]
    if card.arch not in mix.archs:
        return f"quantization mix {quant} names the tensors of {', '.join(mix.archs)}; {card.name} is {card.arch}"
    return None


def tensor_type(spec: TensorSpec, card: ShapeCard, wtype: str, quant: str | None = None) -> Q:
    """The type a tensor is stored in: the mix's choice when a mix is given, else the uniform
    `wtype` for matrices (F32 for the rest); either falls back when its blocks do not fit a row."""
    if quant is None:
        return storage_type(spec, wtype)
    return fitting_type(spec, MIXES[quant].choose(spec, card))
