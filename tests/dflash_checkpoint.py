"""Test helper: a synthetic DFlash drafter written as a z-lab checkpoint (config.json and safetensors).

The tensors are a synth GGUF's, renamed to the Hugging Face names z-lab's `DFlashDraftModel` saves
(its state dict has no `model.` prefix) and in HF numbering (`target_layer_ids` = llama.cpp's - 1),
so that converting the checkpoint back must give the synth GGUF tensor for tensor. The names are
written out here rather than taken from the converter, so a wrong mapping there fails the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import safetensors

from specsweep.synth.cards import ShapeCard

GLOBAL = {"fc.weight": "fc.weight", "enc.output_norm.weight": "hidden_norm.weight",
          "output_norm.weight": "norm.weight"}
BLOCK = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name in GLOBAL:
        return GLOBAL[gguf_name]
    _, il, part, suffix = gguf_name.split(".")
    return f"layers.{il}.{BLOCK[part]}.{suffix}"


def zlab_config(card: ShapeCard) -> dict:
    """config.json as z-lab writes it for a Qwen3-style drafter (the fields of its published configs)."""
    swa = bool(card.swa_window)
    return {
        "architectures": ["DFlashDraftModel"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": {"AutoModel": "dflash.DFlashDraftModel"},
        "block_size": card.block_size,
        "dflash_config": {"mask_token_id": card.mask_token_id,
                          "target_layer_ids": [i - 1 for i in card.target_layers]},
        "dtype": "bfloat16",
        "head_dim": card.head_dim,
        "hidden_act": "silu",
        "hidden_size": card.n_embd,
        "initializer_range": 0.02,
        "intermediate_size": card.n_ff,
        "layer_types": ["sliding_attention" if swa and s else "full_attention"
                        for s in (card.swa_layers or (False,) * card.n_layer)],
        "max_position_embeddings": card.n_ctx_train,
        "max_window_layers": card.n_layer,
        "model_type": "qwen3",
        "num_attention_heads": card.n_head,
        "num_hidden_layers": card.n_layer,
        "num_key_value_heads": card.n_head_kv,
        "num_target_layers": 40,
        "rms_norm_eps": card.rms_eps,
        "rope_scaling": None,
        "rope_theta": card.rope_base,
        "sliding_window": card.swa_window if swa else None,
        "tie_word_embeddings": False,
        "use_cache": True,
        "use_sliding_window": swa,
        "vocab_size": card.n_vocab,
    }


def _as(data: np.ndarray, dtype: str) -> tuple[str, bytes]:
    """(safetensors dtype, bytes) of float values stored as `dtype` (BF16 rounds to nearest even)."""
    f32 = np.asarray(data, dtype=np.float32)
    if dtype == "BF16":
        return "bfloat16", gguf.quants.quantize(f32, gguf.GGMLQuantizationType.BF16).tobytes()
    if dtype == "F16":
        return "float16", np.asarray(data).astype(np.float16).tobytes()
    return "float32", f32.tobytes()


def save_safetensors(tensors: dict[str, tuple[str, list[int], bytes]], path: Path) -> None:
    """Write raw (dtype, shape, bytes) tensors with the safetensors library (bf16 has no numpy type)."""
    keep = {n: np.frombuffer(b, dtype=np.uint8).copy() for n, (_, _, b) in tensors.items()}
    if hasattr(safetensors, "TensorSpec"):  # safetensors >= 0.8 takes raw pointers
        specs = {n: safetensors.TensorSpec(dtype=d, shape=list(s), data_ptr=keep[n].ctypes.data,
                                           data_len=keep[n].nbytes) for n, (d, s, _) in tensors.items()}
    else:
        specs = {n: {"dtype": d, "shape": list(s), "data": bytes(keep[n])} for n, (d, s, _) in tensors.items()}
    safetensors.serialize_file(specs, str(path), metadata={"format": "pt"})


def write_checkpoint(synth_gguf: Path, card: ShapeCard, out: Path, dtype: str = "BF16", shards: int = 1,
                     prefix: str = "") -> Path:
    """The synth GGUF's tensors as a z-lab checkpoint in `out` (config.json, model.safetensors or
    `shards` shards with model.safetensors.index.json). Matrices are stored as `dtype`, 1-D tensors
    too (z-lab stores everything bf16). `prefix` is prepended to every tensor name."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(zlab_config(card), indent=2))
    reader = gguf.GGUFReader(synth_gguf)
    tensors = {}
    for t in reader.tensors:
        if t.tensor_type not in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32):
            raise ValueError(f"{t.name}: write the synth GGUF with --wtype F16")
        st_dtype, raw = _as(t.data, dtype)
        tensors[prefix + hf_name(t.name)] = (st_dtype, [int(d) for d in reversed(t.shape)], raw)
    names = sorted(tensors)
    if shards == 1:
        save_safetensors(tensors, out / "model.safetensors")
        return out
    weight_map = {}
    for k in range(shards):
        part = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        chunk = names[k::shards]
        save_safetensors({n: tensors[n] for n in chunk}, out / part)
        weight_map.update({n: part for n in chunk})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out
