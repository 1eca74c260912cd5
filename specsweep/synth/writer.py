"""Assemble a random-weight GGUF from a shape card, atomically.

The file is written under a temporary name beside the target and renamed into place only when it
is complete, so an interrupted or failed write never leaves a half-written model under the real
name. The recipe (card, scale, weight type or quantization mix, seed, perturbation) is recorded in the GGUF's metadata
under `specsweep.synth.*`, which is how `--like TARGET` rebuilds a draft from a target's header
alone.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from specsweep.errors import SpecsweepError
from specsweep.synth.cards import DRAFTER_OPTIONS, ShapeCard
from specsweep.synth.fill import (FILE_TYPE, RandomPool, blend_rows, nbytes, pool_size, skew_router, stable_hash,
                                  tensor_bytes)
from specsweep.synth.quants import MIXES, tensor_type
from specsweep.synth.tensors import tensor_specs
from specsweep.synth.vocab import CHATML_TEMPLATE, family_vocab

META = "specsweep.synth."


@dataclass(frozen=True)
class Recipe:
    card: ShapeCard  # already at its scale
    scale: str
    wtype: str
    seed: int = 0
    perturb: float = 0.0  # fraction of the output head's token rows re-randomised
    perturb_seed: int = 1
    # < 1 shrinks what every block adds to the residual stream, so the current token's embedding
    # dominates and the model stops being chaotic. Full-size random models are: on an H100 a verify
    # batch and one-token decoding (different kernels) rounded near-ties apart within a few tokens,
    # and a draft identical to its target was accepted only ~21% of the time. Speed is unchanged.
    branch_scale: float = 1.0
    # add the card's multi-token-prediction layer (Qwen3.5/3.6 ship one), whose eh_proj passes the
    # next token's embedding through: the head then predicts what an embedding-dominated synthetic
    # target predicts, the MTP analogue of a draft identical to its target
    mtp: bool = False
    # drafter variants; None keeps the card's choice (cards.option_error says where each applies):
    # a DSpark drafter with or without its confidence head, sampling from the anchor or not, and an
    # EAGLE-3 drafter with its own token_embd/output instead of borrowing the target's
    conf_head: bool | None = None
    sample_from_anchor: bool | None = None
    own_embeddings: bool | None = None
    # a per-tensor quantization mix (synth/quants.py MIXES) instead of the uniform wtype; None: wtype
    quant: str | None = None
    # how unevenly a MoE router uses its experts (fill.skew_router): 0 keeps the random router, whose
    # distinct tokens route independently; 0.5 matches a trained router's measured expert load
    # (docs/models.md, "Routing"). Only ffn_gate_inp's values change
    router_skew: float = 0.0

    @property
    def types(self) -> str:
        """What the weights are stored as: the mix's name or the uniform type."""
        return self.quant or self.wtype

    @property
    def drafter_options(self) -> dict[str, bool]:
        """The drafter variants this recipe sets (recorded in the GGUF, part of a model's identity)."""
        return {k: v for k in DRAFTER_OPTIONS if (v := getattr(self, k)) is not None}

    @property
    def file_stem(self) -> str:
        """The name the specsweep cache keeps this recipe's file under (one file per recipe)."""
        stem = f"{self.card.name}-{self.scale}-{self.types}-s{self.seed}"
        if self.perturb:
            stem += f"-p{self.perturb:g}-ps{self.perturb_seed}"
        if self.branch_scale != 1.0:
            stem += f"-b{self.branch_scale:g}"
        if self.router_skew:
            stem += f"-rs{self.router_skew:g}"
        if self.mtp:
            stem += "-mtp"
        return stem + "".join(f"-{k.replace('_', '')}{int(v)}" for k, v in self.drafter_options.items())

    @property
    def shape(self) -> ShapeCard:
        """The card as written: with its MTP layer and drafter variants when asked for."""
        card = dataclasses.replace(self.card, n_mtp=1) if self.mtp else self.card
        return dataclasses.replace(card, **self.drafter_options) if self.drafter_options else card


@dataclass(frozen=True)
class WriteResult:
    path: Path
    n_tensors: int
    n_bytes: int
    n_params: int
    n_perturbed: int
    seconds: float


def _layout(recipe: Recipe):
    """Each tensor's spec, storage type and size in bytes."""
    card = recipe.shape
    specs = tensor_specs(card)
    qtypes = [tensor_type(s, card, recipe.wtype, recipe.quant) for s in specs]
    return specs, qtypes, [nbytes(s, q) for s, q in zip(specs, qtypes)]


def planned_bytes(recipe: Recipe) -> int:
    """The bytes of tensor data the file will hold (no header)."""
    return sum(_layout(recipe)[2])


def planned_tensors(recipe: Recipe) -> dict[str, tuple[str, int]]:
    """Each tensor's storage type name (F32, Q8_0, Q4_K, ...) and bytes, without writing anything."""
    specs, qtypes, sizes = _layout(recipe)
    return {s.name: (q.name, n) for s, q, n in zip(specs, qtypes, sizes)}


def planned_file_bytes(recipe: Recipe) -> int:
    """The size the GGUF file will have, exactly, without writing its tensor data: the header
    (metadata, vocabulary and tensor infos, a few MB) is written to a temporary file and measured,
    then every tensor's bytes are added at llama.cpp's alignment, as GGUFWriter lays them out."""
    specs, qtypes, sizes = _layout(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        writer = _header_writer(recipe, Path(tmp) / "header.gguf", specs, qtypes, sizes)
        writer.close()
        header = (Path(tmp) / "header.gguf").stat().st_size
    align = writer.data_alignment
    pad = gguf.GGUFWriter.ggml_pad
    # the header is padded to the alignment, and so is every tensor's data, the last one's too
    return pad(header, align) + sum(pad(n, align) for n in sizes)


def _header_writer(recipe: Recipe, path: Path, specs, qtypes, sizes) -> gguf.GGUFWriter:
    """A writer at `path` with the metadata and tensor infos written, ready for the tensor data."""
    writer = gguf.GGUFWriter(path, recipe.shape.arch)
    _add_metadata(writer, recipe)
    for spec, qtype, size in zip(specs, qtypes, sizes):
        writer.add_tensor_info(spec.name, spec.shape[::-1], np.dtype(np.float32), size, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    return writer


def cached_path(recipe: Recipe) -> Path:
    """Where the recipe's GGUF lives in the specsweep cache, written or not."""
    from specsweep.models import cache

    return cache.synth_dir() / f"{recipe.file_stem}.gguf"


def write_cached(recipe: Recipe, progress: Callable[[int], None] | None = None) -> Path:
    """The recipe's GGUF in the specsweep cache (`cached_path`), written once: a matrix's
    `{ synth = CARD, ... }` entry and `probe --synth`'s stand-in of the same recipe share the file."""
    path = cached_path(recipe)
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_model(recipe, path, progress=progress)  # atomic: a temporary name, renamed when complete
        except OSError as e:
            raise SpecsweepError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def write_model(recipe: Recipe, out: Path, progress: Callable[[int], None] | None = None) -> WriteResult:
    t0 = time.perf_counter()
    specs, qtypes, sizes = _layout(recipe)
    # sized by the trunk alone, so that adding the MTP layer leaves every other tensor's bytes as they were
    pool = RandomPool(recipe.seed, pool_size(planned_bytes(dataclasses.replace(recipe, mtp=False))))

    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    writer = None
    try:
        writer = _header_writer(recipe, tmp, specs, qtypes, sizes)
        n_perturbed = 0
        for spec, qtype in zip(specs, qtypes):
            data = tensor_bytes(spec, qtype, pool, 0, recipe.branch_scale)
            if recipe.router_skew and spec.name.endswith(".ffn_gate_inp.weight"):
                data = skew_router(data, recipe.router_skew, stable_hash("router_skew", recipe.seed, spec.name))
            if recipe.perturb > 0 and spec.is_output_head:
                # Only the output head's token rows are re-randomised: the hidden states stay the
                # target's, so the draft keeps the target's choice unless that token's row was
                # replaced or a replaced row beats it, and greedy agreement is close to
                # (1 - f) / (1 + f). Re-randomising whole block matrices was tried first: random
                # models are chaotic, and 1% of the weights of every matrix already dropped
                # agreement to about 35% on the tiny cards, so acceptance could not be dialled in.
                other = tensor_bytes(spec, qtype, pool, recipe.perturb_seed, recipe.branch_scale)
                key = stable_hash("perturb", recipe.seed, recipe.perturb_seed, spec.name)
                data = blend_rows(data, other, spec.shape[1], recipe.perturb, key)
                n_perturbed += 1
            writer.write_tensor_data(data)
            if progress:
                progress(data.nbytes)
        writer.close()
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return WriteResult(
        path=out,
        n_tensors=len(specs),
        n_bytes=out.stat().st_size,
        n_params=sum(s.n_elements for s in specs),
        n_perturbed=n_perturbed,
        seconds=time.perf_counter() - t0,
    )


def _add_metadata(w: gguf.GGUFWriter, r: Recipe) -> None:
    c = r.shape
    w.add_name(f"specsweep synthetic {c.name} ({r.scale}, {r.types}, seed {r.seed})")
    w.add_file_type(MIXES[r.quant].file_type if r.quant else FILE_TYPE[r.wtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(c.n_ctx_train)
    w.add_embedding_length(c.n_embd)
    w.add_block_count(c.n_layer + c.n_mtp)  # llama.cpp counts the MTP layers in block_count
    if c.n_mtp:
        w.add_uint32(f"{c.arch}.nextn_predict_layers", c.n_mtp)
    if c.arch == "dflash":
        w.add_uint32("dflash.block_size", c.block_size)
        w.add_array("dflash.target_layers", list(c.target_layers))
        if c.swa_window:  # llama.cpp reads a per-layer pattern (bool array) next to the window
            w.add_uint32("dflash.attention.sliding_window", c.swa_window)
            w.add_array("dflash.attention.sliding_window_pattern", list(c.swa_layers))
        if c.rope_sections:  # a drafter of an M-RoPE target: llama.cpp ropes it as M-RoPE
            w.add_rope_dimension_sections(list(c.rope_sections))
    _add_drafter_metadata(w, c)
    w.add_head_count(c.n_head)
    w.add_head_count_kv(c.n_head_kv)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_rope_dimension_count(c.n_rot or c.head_dim)
    w.add_rope_freq_base(c.rope_base)
    w.add_layer_norm_rms_eps(c.rms_eps)
    if c.n_ff:
        w.add_feed_forward_length(c.n_ff)
    if c.is_moe:
        w.add_expert_count(c.n_expert)
        w.add_expert_used_count(c.n_expert_used)
        w.add_expert_feed_forward_length(c.n_ff_exp)
        if c.n_ff_shexp:
            w.add_expert_shared_feed_forward_length(c.n_ff_shexp)
    if c.is_hybrid:
        w.add_ssm_conv_kernel(c.ssm_d_conv)
        w.add_ssm_inner_size(c.ssm_d_inner)
        w.add_ssm_state_size(c.ssm_d_state)
        w.add_ssm_time_step_rank(c.ssm_dt_rank)
        w.add_ssm_group_count(c.ssm_n_group)
        w.add_full_attention_interval(c.full_attn_interval)
        w.add_rope_dimension_sections(list(c.rope_sections))

    v = family_vocab(c.family, c.n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(v.pre)
    w.add_token_list(list(v.tokens))
    w.add_token_types(list(v.types))
    w.add_token_merges(list(v.merges))
    w.add_bos_token_id(v.bos_id)
    w.add_eos_token_id(v.eos_id)
    w.add_pad_token_id(v.pad_id)
    if c.arch == "dflash":  # the noise token of the block
        w.add_uint32("tokenizer.ggml.mask_token_id", c.mask_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    w.add_string(META + "card", c.name)
    w.add_string(META + "scale", r.scale)
    w.add_string(META + "wtype", r.wtype)
    w.add_uint64(META + "seed", r.seed)
    w.add_float32(META + "perturb", r.perturb)
    w.add_uint64(META + "perturb_seed", r.perturb_seed)
    w.add_float32(META + "branch_scale", r.branch_scale)
    w.add_bool(META + "mtp", r.mtp)
    for key, value in r.drafter_options.items():
        w.add_bool(META + key, value)
    if r.quant:  # only when set, so that files without a mix keep their bytes
        w.add_string(META + "quant", r.quant)
    if r.router_skew:  # likewise
        w.add_float32(META + "router_skew", r.router_skew)


def _add_drafter_metadata(w: gguf.GGUFWriter, c: ShapeCard) -> None:
    """The keys llama.cpp reads for EAGLE-3 (llama_model_eagle3::load_arch_hparams) and DSpark
    (common_speculative_impl_draft_dflash, build_dspark_markov_head), written as llama.cpp's
    converters write them (conversion/llama.py, conversion/qwen.py DSparkModel)."""
    if c.is_eagle3:
        w.add_array("eagle3.target_layers", list(c.target_layers))
        w.add_uint32("eagle3.target_hidden_size", c.n_embd_target)
        w.add_bool("eagle3.norm_before_residual", False)
        w.add_bool("eagle3.norm_before_fc", False)
    if c.is_dspark:
        # both read as strings by llama.cpp; an absent has_confidence_head counts as true there
        w.add_bool("dflash.sample_from_anchor", c.sample_from_anchor)
        w.add_bool("dflash.has_confidence_head", c.conf_head)


def read_recipe_fields(path: Path) -> dict[str, object]:
    """The `specsweep.synth.*` fields of a GGUF (header only; tensors are not read)."""
    reader = gguf.GGUFReader(path)
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith(META):
            fields[key[len(META):]] = field.contents()
    return fields
