"""A z-lab DFlash drafter checkpoint -> the GGUF llama.cpp's `dflash` architecture loads, in process.

What llama.cpp's own `convert_hf_to_gguf.py --target-model-dir DIR` does for z-lab's Qwen3-style
drafters (`DFlashModel` in conversion/qwen.py, with its bases Qwen3Model, Qwen2Model and TextModel
in conversion/base.py), without torch or transformers:

- config.json is read as transformers' Qwen3Config would give it to llama.cpp (`rope_theta` and
  `head_dim` defaults, `sliding_window` kept only with `use_sliding_window`, `layer_types` derived
  from `max_window_layers` when absent) and written under the same keys, in the same types;
  general.name/basename/finetune/size_label and whatever the model card adds come from the gguf
  package's `Metadata`, the code llama.cpp's converter uses for them;
  `target_layer_ids` are written + 1, as llama.cpp's converter does (it extracts layer inputs);
- tensors are renamed as llama.cpp's tensor map does (`fc`, `hidden_norm` -> `enc.output_norm`,
  `norm` -> `output_norm`, Qwen3 block names -> `blk.N.*`); 1-D tensors and norms become F32 and
  every matrix the file type llama.cpp's default `--outtype auto` picks: BF16 when the first matrix
  of the checkpoint is bf16 (z-lab's are), F16 when it is f16 or when none is either. bf16 and f16
  matrices are copied byte for byte: llama.cpp widens them to f32 and rounds back, which returns
  the same bits for every number (only a NaN's payload could differ);
- the vocabulary: llama.cpp's converter reads the target's Hugging Face tokenizer (transformers).
  Here every `tokenizer.*` key is copied from the target's GGUF, which the same converter wrote
  from that tokenizer, and the drafter's `mask_token_id` is set over it. llama.cpp's DFlash loader
  needs the drafter's own vocabulary: its token count (the target's embeddings and head are used
  with it), the mask token, and a vocabulary that passes the draft/target compatibility check;
- a drafter of an M-RoPE target gets degenerate rope sections [head_dim/2, 0, 0, 0], as llama.cpp
  writes when the target's config has an `mrope_section`; here: when the target GGUF has rope
  sections (every Qwen3.5/3.6 GGUF does).

What this converter does not write (DFlash2 selectors, DSpark heads, `mask_embedding.pt`, FP8 or
other quantised checkpoints, partial rotary, logit/embedding scales, rope scaling) is refused with
one line naming llama.cpp's converter. Nothing is written unless the whole file is: the GGUF goes
to a temporary name beside `out` and is renamed when complete.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from specsweep.errors import SpecsweepError

ARCH = "dflash"

_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
# tensors llama.cpp's converter drops
_SKIPPED = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
# config features this converter does not write: llama.cpp's converter handles them
_UNSUPPORTED_CONFIG = ("partial_rotary_factor", "attention_value_scale", "output_multiplier",
                       "final_logit_softcapping", "input_embedding_scale", "quantization_config", "text_config")
_DFLASH_CONFIG = {"mask_token_id", "target_layer_ids", "block_size", "causal", "use_swa", "swa_window_size"}
_DTYPES = {"BF16": Q.BF16, "F16": Q.F16, "F32": Q.F32}
_FILE_TYPE = {Q.BF16: gguf.LlamaFileType.MOSTLY_BF16, Q.F16: gguf.LlamaFileType.MOSTLY_F16}


class NeedsLlamaCpp(SpecsweepError):
    """A checkpoint only llama.cpp's converter (torch, transformers) can convert; the message names it."""


@dataclass(frozen=True)
class Layout:
    """The drafter as llama.cpp's converter reads it from config.json."""
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    n_vocab: int
    rope_theta: float
    rms_eps: float
    block_size: int
    target_layers: tuple[int, ...]  # llama.cpp's numbering: HF target_layer_ids + 1
    mask_token_id: int
    swa_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    causal: bool | None = None


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    n_tensors: int
    n_bytes: int
    file_type: str  # "BF16" or "F16"
    seconds: float


def llama_cpp_command(checkpoint: Path, out: Path) -> str:
    return (f"python convert_hf_to_gguf.py {checkpoint} --target-model-dir <the target's Hugging Face "
            f"directory> --outfile {out}")


def read_layout(checkpoint: Path, fallback: str) -> Layout:
    """config.json -> Layout; a missing key or a feature this converter does not write: one line."""
    try:
        return _layout(checkpoint, fallback)
    except (TypeError, ValueError) as e:  # a value of the wrong kind (a string where a number goes)
        raise SpecsweepError(f"{checkpoint / 'config.json'}: unexpected value ({e})") from None


def _layout(checkpoint: Path, fallback: str) -> Layout:
    path = checkpoint / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecsweepError(f"{checkpoint}: no config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecsweepError(f"{path}: not a readable JSON config ({e})") from None
    if not isinstance(cfg, dict):
        raise SpecsweepError(f"{path}: not a JSON object")
    archs = cfg.get("architectures") or []
    if archs[:1] not in (["DFlashDraftModel"], ["DFlash2DraftModel"]):
        raise SpecsweepError(f"{path}: architectures {archs} is not a DFlash drafter (DFlashDraftModel)")
    dc = cfg.get("dflash_config") or {}
    if not isinstance(dc, dict):
        raise SpecsweepError(f"{path}: dflash_config is not a JSON object")
    unsupported = ["DFlash2DraftModel"] if archs[0] == "DFlash2DraftModel" else []
    unsupported += [k for k in _UNSUPPORTED_CONFIG if cfg.get(k) is not None]
    unsupported += [f"dflash_config.{k}" for k in sorted(set(dc) - _DFLASH_CONFIG)]
    if cfg.get("rope_scaling") or cfg.get("rope_parameters"):
        unsupported.append("rope_scaling")
    if cfg.get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act {cfg['hidden_act']}")
    if cfg.get("rope_is_neox_style") is False:
        unsupported.append("rope_is_neox_style")
    if unsupported:
        raise NeedsLlamaCpp(f"{checkpoint}: config uses {', '.join(unsupported)}, which specsweep's converter "
                             f"does not write; convert with llama.cpp's: {fallback}")

    def need(key: str, where: dict = cfg, prefix: str = "") -> object:
        if where.get(key) is None:
            raise SpecsweepError(f"{path}: no {prefix}{key}")
        return where[key]

    n_layer, n_embd, n_head = int(need("num_hidden_layers")), int(need("hidden_size")), int(need("num_attention_heads"))
    target_ids = dc.get("target_layer_ids", cfg.get("target_layer_ids"))
    if not target_ids:
        raise SpecsweepError(f"{path}: no dflash_config.target_layer_ids")
    mask = need("mask_token_id", dc, "dflash_config.")

    # transformers' Qwen3Config, which llama.cpp reads the config through: the window only with
    # use_sliding_window, layer types derived from max_window_layers when not given
    use_swa = bool(cfg.get("use_sliding_window", False))
    hf_window = cfg.get("sliding_window") if use_swa else None
    window = dc.get("swa_window_size") or hf_window
    layer_types = cfg.get("layer_types") or [
        "sliding_attention" if hf_window is not None and i >= cfg.get("max_window_layers", 28) else "full_attention"
        for i in range(n_layer)]
    if len(layer_types) != n_layer:
        raise SpecsweepError(f"{path}: layer_types lists {len(layer_types)} layers, num_hidden_layers is {n_layer}")
    swa_window, swa_layers = 0, ()
    if (use_swa or dc.get("use_swa", False)) and window:
        swa_window = int(window)
        swa_layers = tuple([True] * n_layer if dc.get("use_swa", False)
                           else [t == "sliding_attention" for t in layer_types])
    causal = cfg.get("is_causal")
    if causal is None:
        causal = dc.get("causal")
    return Layout(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        n_head_kv=int(need("num_key_value_heads")),
        head_dim=int(cfg.get("head_dim") or n_embd // n_head),
        n_ff=int(need("intermediate_size")),
        n_ctx=int(need("max_position_embeddings")),
        n_vocab=int(need("vocab_size")),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),  # Qwen3Config's default
        rms_eps=float(need("rms_norm_eps")),
        block_size=int(dc.get("block_size", cfg.get("block_size", 16))),
        target_layers=tuple(int(i) + 1 for i in target_ids),
        mask_token_id=int(mask),
        swa_window=swa_window, swa_layers=swa_layers,
        causal=None if causal is None else bool(causal),
    )


def expected_tensors(lay: Layout) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HF name -> (GGUF name, HF shape) of every tensor a z-lab Qwen3-style drafter has."""
    q, kv = lay.n_head * lay.head_dim, lay.n_head_kv * lay.head_dim
    out = {"fc.weight": ("fc.weight", (lay.n_embd, len(lay.target_layers) * lay.n_embd)),
           "hidden_norm.weight": ("enc.output_norm.weight", (lay.n_embd,)),
           "norm.weight": ("output_norm.weight", (lay.n_embd,))}
    shapes = {
        "input_layernorm.weight": (lay.n_embd,), "self_attn.q_proj.weight": (q, lay.n_embd),
        "self_attn.k_proj.weight": (kv, lay.n_embd), "self_attn.v_proj.weight": (kv, lay.n_embd),
        "self_attn.o_proj.weight": (lay.n_embd, q), "self_attn.q_norm.weight": (lay.head_dim,),
        "self_attn.k_norm.weight": (lay.head_dim,), "post_attention_layernorm.weight": (lay.n_embd,),
        "mlp.gate_proj.weight": (lay.n_ff, lay.n_embd), "mlp.up_proj.weight": (lay.n_ff, lay.n_embd),
        "mlp.down_proj.weight": (lay.n_embd, lay.n_ff),
    }
    for il in range(lay.n_layer):
        for hf, shape in shapes.items():
            out[f"layers.{il}.{hf}"] = (f"blk.{il}.{_BLOCK[hf]}", shape)
    return out


@dataclass(frozen=True)
class _Source:
    hf_name: str  # as stored
    dtype: str  # safetensors dtype: BF16, F16, F32
    shape: tuple[int, ...]
    local: gguf.utility.LocalTensor  # its byte range in the file


def _weight_files(checkpoint: Path) -> tuple[list[str], dict[str, str]]:
    """(the safetensors files, tensor -> file from the index or {})."""
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise SpecsweepError(f"{index}: no readable weight_map ({e})") from None
        return sorted(set(weight_map.values())), weight_map
    if (checkpoint / "model.safetensors").is_file():
        return ["model.safetensors"], {}
    return [], {}


def _read_sources(checkpoint: Path, fallback: str) -> list[_Source]:
    from safetensors import SafetensorError, safe_open  # the file's own checks: header, offsets, size

    if (checkpoint / "mask_embedding.pt").is_file():
        raise NeedsLlamaCpp(f"{checkpoint} ships mask_embedding.pt, a torch file (the mask token's own embedding, "
                             f"patched into the target's): convert it with llama.cpp's converter: {fallback}")
    parts, weight_map = _weight_files(checkpoint)
    if not parts:
        torch_only = sorted(p.name for p in checkpoint.glob("*.bin")) + sorted(p.name for p in checkpoint.glob("*.pt"))
        what = f"only torch files ({', '.join(torch_only)})" if torch_only else "no model.safetensors"
        raise NeedsLlamaCpp(f"{checkpoint} has {what}: convert it with llama.cpp's converter: {fallback}")
    sources: list[_Source] = []
    for part in parts:
        path = checkpoint / part
        if not path.is_file():
            raise SpecsweepError(f"{checkpoint}: {part} (named in model.safetensors.index.json) is missing")
        try:
            with safe_open(str(path), framework="np") as f:
                described = {n: (f.get_slice(n).get_dtype(), tuple(f.get_slice(n).get_shape())) for n in f.keys()}
        except (SafetensorError, OSError) as e:
            raise SpecsweepError(f"{path}: not a readable safetensors file ({e})") from None
        with gguf.utility.SafetensorsLocal(path) as local:  # the byte ranges, as llama.cpp's converter reads them
            for name in sorted(described):
                dtype, shape = described[name]
                sources.append(_Source(name, dtype, shape, local[name]))
        missing = sorted(n for n, p in weight_map.items() if p == part and n not in described)
        if missing:
            raise SpecsweepError(f"{path} lacks {missing[0]}, which model.safetensors.index.json puts there")
    return sources


def _plan(lay: Layout, sources: list[_Source], checkpoint: Path, fallback: str) -> list[tuple[str, _Source]]:
    """(GGUF name, source) in llama.cpp's order, every tensor checked against the config."""
    want = expected_tensors(lay)
    plan, seen = [], set()
    for s in sources:
        name = s.hf_name.removeprefix("model.")
        if name.endswith(_SKIPPED):
            continue
        if name not in want and name.startswith("layers.") and name.split(".", 2)[-1] in _BLOCK:
            raise SpecsweepError(f"{checkpoint}: tensor {s.hf_name} is beyond the {lay.n_layer} layers config.json "
                                 f"names (num_hidden_layers)")
        if name not in want:
            raise NeedsLlamaCpp(f"{checkpoint}: tensor {s.hf_name} is not one of a Qwen3-style DFlash drafter's "
                                 f"(for {lay.n_layer} layers); convert with llama.cpp's converter: {fallback}")
        if name in seen:
            raise SpecsweepError(f"{checkpoint}: tensor {s.hf_name} is stored twice")
        seen.add(name)
        gguf_name, shape = want[name]
        if s.shape != shape:
            raise SpecsweepError(f"{checkpoint}: tensor {s.hf_name} has shape {list(s.shape)}, config.json "
                                 f"implies {list(shape)}")
        if s.dtype not in _DTYPES:
            raise NeedsLlamaCpp(f"{checkpoint}: tensor {s.hf_name} is {s.dtype}; specsweep converts bf16, f16 and "
                                 f"f32 checkpoints, llama.cpp's converter the rest: {fallback}")
        plan.append((gguf_name, s))
    missing = [n for n in want if n not in seen]
    if missing:
        raise SpecsweepError(f"{checkpoint} lacks tensor {missing[0]}" +
                             (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    return plan


def _file_qtype(plan: list[tuple[str, _Source]]) -> Q:
    """llama.cpp's `--outtype auto`: the type of the first bf16 or f16 matrix, else F16."""
    for _, s in plan:
        if len(s.shape) >= 2 and s.dtype in ("BF16", "F16"):
            return _DTYPES[s.dtype]
    return Q.F16


def _stored_type(gguf_name: str, src: _Source, file_qtype: Q) -> Q:
    # llama.cpp keeps 1-D tensors and norms F32, every other ".weight" the file type
    return Q.F32 if len(src.shape) <= 1 or gguf_name.endswith("_norm.weight") else file_qtype


def _data(src: _Source, qtype: Q) -> np.ndarray:
    """The tensor in `qtype`: bytes copied where the types agree, else widened to f32 and rounded as
    llama.cpp's converter does (gguf.quants)."""
    raw = src.local.mmap_bytes()
    if _DTYPES[src.dtype] == qtype:
        return raw
    if src.dtype == "BF16":
        f32 = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        f32 = raw.view(np.float16 if src.dtype == "F16" else np.float32).astype(np.float32)
    f32 = f32.reshape(src.shape)
    return f32 if qtype == Q.F32 else gguf.quants.quantize(f32, qtype)


def _nbytes(src: _Source, qtype: Q) -> int:
    n = int(np.prod(src.shape)) if src.shape else 1
    return n * (4 if qtype == Q.F32 else 2)


def _tokenizer_fields(target_gguf: Path) -> tuple[list[tuple[str, object, object, object]], int, str, bool]:
    """(tokenizer keys as (key, value, type, sub-type), token count, target arch, has rope sections)."""
    try:
        reader = gguf.GGUFReader(target_gguf)
    except Exception as e:  # gguf raises ValueError/struct errors on foreign or truncated files
        raise SpecsweepError(f"{target_gguf}: not a readable GGUF ({e})") from None
    arch = str(reader.fields["general.architecture"].contents()) if "general.architecture" in reader.fields else ""
    out, n_tokens = [], 0
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.ggml.mask_token_id":
            continue
        vtype = gguf.GGUFValueType(f.types[0])
        sub = gguf.GGUFValueType(f.types[1]) if vtype == gguf.GGUFValueType.ARRAY else None
        out.append((key, f.contents(), vtype, sub))
        if key == "tokenizer.ggml.tokens":
            n_tokens = len(f.data)
    if not n_tokens:
        raise SpecsweepError(f"{target_gguf} has no tokenizer (tokenizer.ggml.tokens) to give the drafter")
    return out, n_tokens, arch, f"{arch}.rope.dimension_sections" in reader.fields


def convert(checkpoint: Path, target_gguf: Path, out: Path, *, name: str | None = None,
            provenance: dict[str, str] | None = None, fallback: str | None = None) -> ConvertResult:
    """Convert the z-lab checkpoint directory `checkpoint` (config.json and model.safetensors, or
    shards with model.safetensors.index.json) into `out`, with the vocabulary of `target_gguf`.

    `name` is llama.cpp's `--model-name` (general.name; by default derived from the model card or
    the folder's name, as llama.cpp's converter does); `provenance` adds `specsweep.convert.*`
    string keys (llama.cpp reads none of them); `fallback` is the llama.cpp conversion command
    named in refusals."""
    t0 = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    fallback = fallback or llama_cpp_command(checkpoint, out)
    if not checkpoint.is_dir():
        raise SpecsweepError(f"{checkpoint}: no such checkpoint folder")
    lay = read_layout(checkpoint, fallback)
    plan = _plan(lay, _read_sources(checkpoint, fallback), checkpoint, fallback)
    tokenizer, n_tokens, target_arch, target_mrope = _tokenizer_fields(target_gguf)
    if n_tokens != lay.n_vocab:
        raise SpecsweepError(f"{checkpoint}: vocab_size {lay.n_vocab} differs from the {n_tokens} tokens of "
                             f"{target_gguf.name}: the drafter was made for another target")
    if not 0 <= lay.mask_token_id < lay.n_vocab:
        raise SpecsweepError(f"{checkpoint}: mask_token_id {lay.mask_token_id} is outside the {lay.n_vocab} tokens")
    file_qtype = _file_qtype(plan)
    if not out.parent.is_dir():
        raise SpecsweepError(f"cannot write {out}: folder {out.parent} does not exist")

    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(tmp, ARCH)
    try:
        types = [_stored_type(n, s, file_qtype) for n, s in plan]
        for (gname, src), qtype in zip(plan, types):
            writer.add_tensor_info(gname, src.shape, np.dtype(np.float32), _nbytes(src, qtype), raw_dtype=qtype)
        _metadata(writer, lay, checkpoint, name, file_qtype, tokenizer, target_mrope)
        for key, value in (provenance or {}).items():
            writer.add_string(f"specsweep.convert.{key}", value)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for (_, src), qtype in zip(plan, types):
            writer.write_tensor_data(_data(src, qtype))
        writer.close()
        os.replace(tmp, out)
    except OSError as e:
        raise SpecsweepError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        writer.close()
        if tmp.exists():
            tmp.unlink()
    return ConvertResult(out, len(plan), out.stat().st_size, file_qtype.name, time.perf_counter() - t0)


def _metadata(w: gguf.GGUFWriter, lay: Layout, checkpoint: Path, name: str | None, file_qtype: Q, tokenizer: list,
              target_mrope: bool) -> None:
    """The keys llama.cpp's converter writes, in its order (after the tensor infos: the size label
    counts their parameters)."""
    w.add_type(gguf.GGUFType.MODEL)
    total, shared, expert, n_expert = w.get_total_parameter_count()
    try:  # ModelBase.prepare_metadata: the model card (README.md) and the folder's name
        meta = gguf.Metadata.load(None, checkpoint, name, total)
    except Exception as e:  # YAML or JSON errors of a model card
        raise SpecsweepError(f"{checkpoint}: cannot read the model card's metadata ({e})") from None
    meta.name = meta.name or checkpoint.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, n_expert)
    meta.set_gguf_meta_model(w)
    # TextModel.set_gguf_parameters
    w.add_block_count(lay.n_layer)
    w.add_context_length(lay.n_ctx)
    w.add_embedding_length(lay.n_embd)
    w.add_feed_forward_length(lay.n_ff)
    w.add_head_count(lay.n_head)
    w.add_head_count_kv(lay.n_head_kv)
    w.add_rope_freq_base(lay.rope_theta)
    w.add_layer_norm_rms_eps(lay.rms_eps)
    w.add_key_length(lay.head_dim)
    w.add_value_length(lay.head_dim)
    w.add_file_type(_FILE_TYPE[file_qtype])
    # DFlashModel.set_gguf_parameters
    w.add_uint32(f"{ARCH}.block_size", lay.block_size)
    w.add_array(f"{ARCH}.target_layers", list(lay.target_layers))
    if lay.swa_window:
        w.add_uint32(f"{ARCH}.attention.sliding_window", lay.swa_window)
        w.add_array(f"{ARCH}.attention.sliding_window_pattern", list(lay.swa_layers))
    if lay.causal is not None:
        w.add_bool(f"{ARCH}.attention.causal", lay.causal)
    if target_mrope:  # the drafter ropes on the temporal dimension only
        w.add_rope_dimension_sections([lay.head_dim // 2, 0, 0, 0])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # DFlashModel.set_vocab: the target's tokenizer, then the drafter's mask token
    for key, value, vtype, sub in tokenizer:
        w.add_key_value(key, value, vtype, sub)
    w.add_uint32("tokenizer.ggml.mask_token_id", lay.mask_token_id)
