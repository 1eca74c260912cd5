"""Memory estimates from GGUF headers. The expected KV and recurrent-state sizes below are the ones
llama.cpp itself logs for these tiny models (`llama_kv_cache: size = 0.27 MiB (1024 cells, 1
layers)`, `llama_memory_recurrent: size = 0.06 MiB`, R 3 x 3072 B + S 3 x 16384 B) at n_ctx 1000."""

from __future__ import annotations

import pytest

from specsweep.errors import SpecsweepError
from specsweep.models.memory import (FreeMemory, estimate_cell_bytes, fit_warning, free_device_bytes,
                                     free_device_memory, model_memory)
from specsweep.synth.cards import CARDS
from specsweep.synth.writer import Recipe, planned_bytes, write_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("mem")
    out = {}
    for card in ("qwen3.6-35b-a3b", "qwen3-0.6b"):
        recipe = Recipe(CARDS[card].at_scale("tiny"), "tiny", "Q4_0")
        out[card] = (d / f"{card}.gguf", recipe)
        write_model(recipe, out[card][0])
    return out


def test_hybrid_counts_only_attention_layers_plus_recurrent_state(tiny):
    path, recipe = tiny["qwen3.6-35b-a3b"]
    m = model_memory(path, "q8_0", n_ctx=1000)
    assert m.weights == planned_bytes(recipe)  # every tensor's bytes, from the header
    assert (m.n_attn_layers, m.n_recurrent_layers) == (1, 3)  # full_attention_interval 4
    # 1000 -> 1024 cells, 1 layer, 2 kv heads x (64 + 64), q8_0 = 34 bytes per 32 elements
    assert m.kv == 1024 * 2 * 128 * 34 // 32 == 278528
    # conv (4-1) * (128 + 2*2*32) + ssm 32 * 128 floats per recurrent layer
    assert m.recurrent == 3 * (3 * 256 + 32 * 128) * 4
    assert model_memory(path, "f16", n_ctx=1000).kv == 1024 * 2 * 128 * 2
    assert model_memory(path, "q8_0", n_ctx=1000, n_seq=2).recurrent == 2 * m.recurrent


def test_an_mtp_layer_counts_only_where_a_cell_loads_it(tiny, tmp_path):
    """llama.cpp skips a file's MTP layer unless the mtp method asks for it: a baseline on the MTP
    file weighs what the file without it weighs, an mtp cell that plus the layer."""
    plain, recipe = tiny["qwen3.6-35b-a3b"]
    with_mtp = tmp_path / "mtp.gguf"
    write_model(Recipe(recipe.card, "tiny", "Q4_0", mtp=True), with_mtp)
    base = model_memory(plain, "q8_0", n_ctx=1000)
    assert model_memory(with_mtp, "q8_0", n_ctx=1000).weights == base.weights
    loaded = model_memory(with_mtp, "q8_0", n_ctx=1000, load_mtp=True).weights
    assert loaded > base.weights
    assert estimate_cell_bytes([with_mtp], "q8_0", 1000, load_mtp=True) - estimate_cell_bytes([with_mtp], "q8_0", 1000) \
        == loaded - base.weights


def test_attention_only_model_counts_every_layer(tiny):
    path, _ = tiny["qwen3-0.6b"]
    m = model_memory(path, "f16", n_ctx=4096)
    assert (m.n_attn_layers, m.n_recurrent_layers, m.recurrent) == (4, 0, 0)
    assert m.kv == 4 * 4096 * 1 * (32 + 32) * 2


def test_cell_counts_shared_weights_once_and_each_context(tiny):
    t, _ = tiny["qwen3.6-35b-a3b"]
    d, _ = tiny["qwen3-0.6b"]
    mt, md = model_memory(t, "q8_0", 2048), model_memory(d, "q8_0", 2048)
    assert estimate_cell_bytes([t], "q8_0", 2048) == mt.total
    assert estimate_cell_bytes([t, d], "q8_0", 2048) == mt.total + md.total
    # a draft that is the target's file shares its weights but has its own KV cache
    assert estimate_cell_bytes([t, t], "q8_0", 2048) == mt.total + mt.kv + mt.recurrent


def test_bad_input(tiny, tmp_path):
    path, _ = tiny["qwen3-0.6b"]
    with pytest.raises(SpecsweepError, match="unknown KV cache type 'q3'"):
        model_memory(path, "q3")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(SpecsweepError, match="model cut.gguf: .* (truncated|not a readable GGUF)"):
        estimate_cell_bytes([cut], "q8_0", 512)
    shard = tmp_path / "m-00001-of-00002.gguf"
    shard.write_bytes(path.read_bytes())
    with pytest.raises(SpecsweepError, match="missing shard.*m-00002-of-00002.gguf"):
        model_memory(shard)


def test_free_memory_and_the_fit_warning():
    host = free_device_memory([])
    assert host.where == "host (MemAvailable)" and host.bytes > 0
    assert free_device_bytes() > 0  # GPU 0 by nvidia-smi where there is one, else the host
    free = FreeMemory(10 * 2**30, "GPU 0 (nvidia-smi)")
    assert fit_warning("cell x", 2**30, free) is None
    assert "compute buffers" in fit_warning("cell x", int(9.5 * 2**30), free)
    assert fit_warning("cell x", 11 * 2**30, free) == ("cell x needs about 11.00 GiB (weights + KV + state) but "
                                                      "GPU 0 (nvidia-smi) has 10.00 GiB free")


def test_split_gguf_sums_every_shard(tmp_path):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(tmp_path / "sp.gguf", "qwen3", split_max_tensors=2)
    w.add_block_count(1)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_key_length(8)
    w.add_value_length(8)
    w.add_embedding_length(16)
    for i in range(3):
        w.add_tensor(f"t{i}", np.ones((4, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    first = tmp_path / "sp-00001-of-00002.gguf"
    assert first.is_file() and (tmp_path / "sp-00002-of-00002.gguf").is_file()
    m = model_memory(first, "f16", n_ctx=256)
    assert m.weights == 3 * 4 * 16 * 4 and m.kv == 256 * 1 * (8 + 8) * 2
