"""The ngram-cache drafter against llama.cpp's `common/ngram-cache.cpp` and its speculative driver.

Expected values that involve libstdc++'s unordered_map order (ties, file order) were produced by
llama.cpp's own ngram-cache.cpp compiled with g++ 12 (-O3) around the same inputs.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from specsweep.engine import runtime
from specsweep.engine.drafters import NgramCache
from specsweep.engine.drafters import ngram_cache as nc
from specsweep.engine.speculative import run_trial
from specsweep.errors import SpecsweepError

E: dict = {}  # an empty cache


def draft(context=E, dynamic=E, static=E, text=(9, 4), n=8):
    return nc.draft_tokens(context, dynamic, static, list(text), n)


def write_entries(path, entries):
    """entries: [(ngram, [(token, count), ...]), ...] in llama.cpp's byte layout."""
    words = []
    for key, pairs in entries:
        words += list(key) + [-1] * (4 - len(key)) + [len(pairs)]
        for token, count in pairs:
            words += [token, count]
    path.write_bytes(struct.pack(f"<{len(words)}i", *words))
    return path


def read_entries(path):
    w = struct.unpack(f"<{path.stat().st_size // 4}i", path.read_bytes())
    out, i = [], 0
    while i < len(w):
        n = w[i + 4]
        pairs = [(w[i + 5 + 2 * j], w[i + 6 + 2 * j]) for j in range(n)]
        out.append((tuple(t for t in w[i:i + 4] if t != -1), pairs))
        i += 5 + 2 * n
    return out


# ---- drafting from the speculative driver -------------------------------------------------------

def test_repeated_sequence_is_drafted_up_to_8():
    d = NgramCache()
    assert (d.n_max, d.n_min) == (8, 0)  # llama.cpp: n_draft = 8 hard-coded, no minimum
    prompt = [1, 2, 3, 4, 5] * 3 + [1, 2]
    assert d.draft(prompt, 3, len(prompt), 0) == [4, 5, 1, 2, 3, 4, 5, 1]
    # a text that never repeats drafts nothing
    assert NgramCache().draft(list(range(100, 140)), 7, 40, 0) == []


def test_caller_clamp_truncates_and_0_means_no_clamp():
    prompt = [1, 2, 3, 4, 5] * 3 + [1, 2]
    assert NgramCache().draft(prompt, 3, 0, 3) == [4, 5, 1]
    assert NgramCache().draft(prompt, 3, 0, 0) == [4, 5, 1, 2, 3, 4, 5, 1]
    assert NgramCache().draft(prompt, 3, 0, 1) == [4]


def test_n_max_and_n_min_extensions():
    prompt = [1, 2, 3, 4, 5] * 3 + [1, 2]
    assert NgramCache(n_max=2).draft(prompt, 3, 0, 0) == [4, 5]
    assert NgramCache(n_min=8).draft(prompt, 3, 0, 0) == [4, 5, 1, 2, 3, 4, 5, 1]
    assert NgramCache(n_min=9).draft(prompt, 3, 0, 0) == []  # shorter than n_min: dropped
    # n_min applies to the drafter's draft, before the caller's clamp (as draft-simple's does)
    assert NgramCache(n_min=4).draft(prompt, 3, 0, 2) == [4, 5]


def test_context_cache_only_learns_ngrams_inside_each_new_chunk():
    """speculative.cpp hands common_ngram_cache_update only the tokens new since the last call:
    n-grams across two calls' chunks never enter the context cache."""
    d = NgramCache()
    assert d.draft([1, 2, 3], 4, 3, 0) == []  # chunk [1, 2, 3, 4]
    assert d.draft([1, 2, 3, 4], 5, 4, 0) == []  # chunk [5]: (2, 3, 4) -> 5 is not learnt
    assert d.draft([1, 2, 3, 4, 5], 6, 5, 0) == []  # chunk [6]
    assert (2, 3, 4) not in d.context and (4,) not in d.context
    text = [1, 2, 3, 4, 5, 6, 2, 3]
    assert d.draft(text, 4, 8, 0) == []
    # the same text seen in one chunk knows that 2 3 4 was followed by 5 6
    assert NgramCache().draft(text, 4, 8, 0)[:2] == [5, 6]


def test_context_update_is_incremental():
    d = NgramCache()
    d.draft([1, 2, 3], 4, 3, 0)
    assert d.cache_size == 4 and d.context[(1, 2, 3)] == {4: 1} and d.context[(1,)] == {2: 1}
    d.draft([1, 2, 3, 4, 7, 8], 9, 6, 0)  # chunk [7, 8, 9]
    assert d.cache_size == 7 and d.context[(7, 8)] == {9: 1} and (4, 7) not in d.context
    d.draft([1, 2, 3, 4, 7, 8], 9, 6, 0)  # nothing new: nothing counted twice
    assert d.context[(7, 8)] == {9: 1}


# ---- common_ngram_cache_draft's rules -----------------------------------------------------------

def test_context_thresholds_are_lax():
    assert draft(context={(4,): {5: 2, 6: 1}}) == [5]  # 1-gram: >= 2 samples, >= 66 %
    assert draft(context={(4,): {5: 1, 6: 1}}) == []  # 50 % < 66 %
    assert draft(context={(4,): {5: 1}}) == []  # 1 sample < 2
    assert draft(context={(9, 4): {5: 1, 6: 1}}) == [6]  # 2-gram: 2 samples, 50 % is enough
    assert draft(context={(1, 9, 4): {5: 1}}, text=(1, 9, 4)) == [5]  # 3-gram: one sample does
    # the longest n-gram that passes wins
    assert draft(context={(4,): {7: 5}, (1, 9, 4): {5: 1}}, text=(1, 9, 4)) == [5]
    assert draft(context={(4,): {7: 5}, (1, 9, 4): {5: 1, 6: 1, 8: 1}}, text=(1, 9, 4)) == [7]


def test_dynamic_thresholds_are_strict_and_come_after_the_context():
    assert draft(dynamic={(4,): {5: 3}}) == []  # 1-gram: >= 4 samples
    assert draft(dynamic={(4,): {5: 4}}) == [5]
    assert draft(dynamic={(4,): {5: 3, 6: 1}}) == [5]  # 75 %
    assert draft(dynamic={(4,): {5: 5, 6: 2}}) == []  # 71 % < 75 %
    assert draft(context={(4,): {6: 2}}, dynamic={(4,): {5: 9}}) == [6]


def test_static_cache_last_resort_and_weighting():
    assert draft(static={(9, 4): {5: 2, 6: 1}}) == [5]
    assert draft(static={(9, 4): {5: 1}}) == []  # 1 sample < 2
    assert draft(static={(9, 4): {5: 1, 6: 2, 7: 2}}) == []  # 40 % < 50 %
    # a context candidate the static 2-gram has seen weighs 100 x its static count...
    assert draft(context={(1, 2, 3): {7: 1, 8: 1}}, static={(2, 3): {7: 3}}, text=(1, 2, 3)) == [7]
    assert draft(context={(1, 2, 3): {7: 1, 8: 1}}, static={(2, 3): {8: 3}}, text=(1, 2, 3)) == [8]
    # ...but the share test still uses its own count: 1 of 3 < 66 %, and nothing else drafts
    assert draft(context={(3,): {7: 2, 8: 1}}, static={(2, 3): {8: 1}}, text=(2, 3)) == []
    assert draft(context={(3,): {7: 2, 8: 1}}, text=(2, 3)) == [7]


def test_int32_products_wrap_like_the_cpp():
    # 100 * 30e6 overflows int32 to a negative weight: the token llama.cpp would never pick
    assert draft(context={(1, 2, 3): {7: 1, 8: 1}}, static={(2, 3): {8: 30_000_000}}, text=(1, 2, 3)) == [7]
    assert draft(context={(1, 2, 3): {7: 1, 8: 1}}, static={(2, 3): {8: 20_000_000}}, text=(1, 2, 3)) == [8]


def test_ties_follow_libstdcxx_unordered_map_order():
    # (7, 8) was followed by 1 once and by 2 once: the map iterates 2 first (llama.cpp drafts 2)
    assert NgramCache().draft([5, 7, 8, 1, 6, 7, 8, 2, 9, 7], 8, 10, 0) == [2, 9, 7, 8, 2, 9, 7, 8]
    assert nc.std_order([3, 16, 29, 1]) == [1, 29, 16, 3]  # 3 and 16 share a bucket of 13
    keys = [(i * 7919 + 13) % 500 for i in range(40)]  # past two rehashes: 13 -> 29 -> 59 buckets
    assert nc.std_order(keys) == [
        354, 435, 97, 178, 259, 340, 421, 83, 164, 41, 122, 203, 284, 365, 27, 446, 69, 108, 189, 270,
        432, 55, 351, 13, 245, 460, 379, 298, 217, 136, 2, 474, 393, 312, 231, 150, 16, 488, 407, 326]


def test_std_order_numpy_path_equals_the_python_one():
    rng = random.Random(3)
    for n in (201, 1000, 5000):
        keys = list(dict.fromkeys(rng.randrange(1 << 20) for _ in range(n)))
        fast = nc.std_order(keys)
        order = nc._std_order_np(np.asarray(keys, dtype=np.uint64))
        assert fast == [keys[i] for i in order]
        small = keys[:150]
        assert nc.std_order(small) == [small[i] for i in nc._std_order_np(np.asarray(small, dtype=np.uint64))]


# ---- files ------------------------------------------------------------------------------------

# common_ngram_cache_update(cache, 1, 4, GOLDEN_TOKENS) then common_ngram_cache_save, as llama.cpp
# (libstdc++) wrote it: entries in this order, followers in this order
GOLDEN_TOKENS = [1, 2, 3, 1, 2, 4, 1, 2, 3, 5, 2, 3, 1, 2, 3, 9]
GOLDEN_FILE = [
    ((1, 2, 3), [(9, 1), (5, 1), (1, 1)]), ((2, 3, 1), [(2, 2)]), ((3, 1, 2), [(3, 1), (4, 1)]),
    ((3, 5, 2, 3), [(1, 1)]), ((5, 2), [(3, 1)]), ((2, 4), [(1, 1)]), ((1, 2, 4, 1), [(2, 1)]),
    ((3, 1), [(2, 2)]), ((2, 3, 1, 2), [(3, 1), (4, 1)]), ((3, 5), [(2, 1)]), ((2, 3, 5, 2), [(3, 1)]),
    ((1,), [(2, 4)]), ((2, 3, 5), [(2, 1)]), ((3, 5, 2), [(3, 1)]), ((5, 2, 3), [(1, 1)]),
    ((5,), [(2, 1)]), ((4,), [(1, 1)]), ((5, 2, 3, 1), [(2, 1)]), ((1, 2, 3, 5), [(2, 1)]),
    ((3, 1, 2, 3), [(9, 1)]), ((1, 2), [(4, 1), (3, 3)]), ((3,), [(9, 1), (5, 1), (1, 2)]),
    ((2,), [(4, 1), (3, 4)]), ((2, 3), [(9, 1), (5, 1), (1, 2)]), ((1, 2, 3, 1), [(2, 1)]),
    ((1, 2, 4), [(1, 1)]), ((2, 4, 1), [(2, 1)]), ((4, 1, 2), [(3, 1)]), ((4, 1), [(2, 1)]),
    ((2, 4, 1, 2), [(3, 1)]), ((3, 1, 2, 4), [(1, 1)]), ((4, 1, 2, 3), [(5, 1)])]


def test_save_writes_the_bytes_llama_cpp_writes(tmp_path):
    cache: dict = {}
    nc.update_cache(cache, GOLDEN_TOKENS)
    nc.save_cache(cache, tmp_path / "c.bin")
    assert (tmp_path / "c.bin").stat().st_size == 976
    assert read_entries(tmp_path / "c.bin") == GOLDEN_FILE
    # loading keeps llama.cpp's history: saving again writes what llama.cpp's load + save writes
    nc.save_cache(nc.load_cache(tmp_path / "c.bin"), tmp_path / "again.bin")
    assert len(read_entries(tmp_path / "again.bin")) == len(GOLDEN_FILE)


def test_static_file_round_trip_drafts_the_same(tmp_path):
    rng = random.Random(0)
    phrases = [[rng.randrange(50) for _ in range(rng.randint(2, 6))] for _ in range(8)]
    corpus = [t for _ in range(300) for t in rng.choice(phrases)]
    static: dict = {}
    nc.update_cache(static, corpus, nc.LLAMA_NGRAM_STATIC, nc.LLAMA_NGRAM_STATIC)  # llama-lookup-create
    nc.save_cache(static, tmp_path / "static.bin")
    loaded = nc.load_cache(tmp_path / "static.bin")
    assert len(loaded) == len(static)
    as_dict = loaded.to_dict()
    assert as_dict == static  # the same counts (dict equality ignores order)
    # llama.cpp's load inserts the followers in the order its save iterated them, which is not the
    # order they were first seen: a tie can go the other way after a save and load, here as there
    # (test_load_order_decides_ties). So the drafts to compare are those of the loaded history.
    entries = read_entries(tmp_path / "static.bin")
    assert all(list(as_dict[key]) == [t for t, _ in pairs] for key, pairs in entries)
    n_drafted = 0
    for i in range(2, 200):
        text = corpus[i - 2:i]
        a = nc.draft_tokens(E, E, as_dict, text, 8)
        assert nc.draft_tokens(E, E, loaded, text, 8) == a
        n_drafted += len(a)
    assert n_drafted > 100
    nc.save_cache(loaded, tmp_path / "again.bin")
    again = nc.load_cache(tmp_path / "again.bin")
    assert again.to_dict() == static
    d = NgramCache(static_path=tmp_path / "static.bin")
    assert d.draft([999, 998] + corpus[:2], corpus[2], 4, 0) == nc.draft_tokens(E, E, as_dict, corpus[:3], 8)


def test_load_order_decides_ties(tmp_path):
    # checked against llama.cpp: the follower written later wins a tie between buckets < 13
    a = write_entries(tmp_path / "a.bin", [((9, 4), [(5, 1), (6, 1)])])
    b = write_entries(tmp_path / "b.bin", [((9, 4), [(6, 1), (5, 1)])])
    assert NgramCache(static_path=a).draft([1, 9], 4, 2, 0) == [6]
    assert NgramCache(static_path=b).draft([1, 9], 4, 2, 0) == [5]


def test_handmade_file_in_llama_cpp_layout(tmp_path):
    path = write_entries(tmp_path / "hand.lcs", [
        ((9, 4), [(5, 3), (6, 1)]),
        ((4, 5), [(7, 2)]),
        ((9, 4), [(8, 9)]),  # a repeated n-gram: emplace keeps the first
        ((5, 7), [(1, 1), (2, 1), (1, 5)]),  # a repeated follower: the first count stays
    ])
    assert path.stat().st_size == 4 * (4 * 5 + 2 * 7)
    cache = nc.load_cache(path)
    assert len(cache) == 3 and cache.get((9, 4)) == {5: 3, 6: 1} and cache.get((5, 7)) == {1: 1, 2: 1}
    assert cache.get((4,)) is None and cache.get((9, 4, 1)) is None
    assert NgramCache(static_path=path).draft([1, 9], 4, 2, 0) == [5, 7, 2]
    # strict: (9, 4) has 4 samples >= 3 and 75 % >= 66 %, (4, 5) only 2 samples < 3
    assert NgramCache(dynamic_path=path).draft([1, 9], 4, 2, 0) == [5]


def test_missing_and_corrupt_files_raise(tmp_path):
    with pytest.raises(SpecsweepError, match="not found: .*nope.bin"):
        NgramCache(static_path=tmp_path / "nope.bin")
    with pytest.raises(SpecsweepError, match="nope2.bin"):
        NgramCache(dynamic_path=tmp_path / "nope2.bin")
    good = write_entries(tmp_path / "good.bin", [((9, 4), [(5, 3), (6, 1)]), ((4, 5), [(7, 2)])])
    raw = good.read_bytes()
    cases = {
        "odd.bin": raw[:-1],  # not whole int32s
        "cut-pairs.bin": raw[:-4],  # followers cut off
        "cut-ngram.bin": raw[:36 + 8],  # the second n-gram cut off
        "zero-k.bin": raw[:16] + struct.pack("<i", 0) + raw[20:],
        "zero-count.bin": raw[:24] + struct.pack("<i", 0) + raw[28:],
        "negative-k.bin": raw[:16] + struct.pack("<i", -3) + raw[20:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SpecsweepError, match=name):
            nc.load_cache(tmp_path / name)
    with pytest.raises(SpecsweepError, match="cannot read"):
        nc.load_cache(tmp_path)  # a directory
    assert len(nc.load_cache(write_entries(tmp_path / "empty.bin", []))) == 0  # llama.cpp loads it


def test_finish_merges_the_context_into_the_dynamic_file(tmp_path):
    dyn = write_entries(tmp_path / "dyn.lcd", [((1, 2), [(3, 5)]), ((8,), [(9, 1)])])
    d = NgramCache(dynamic_path=dyn)
    d.draft([1, 2, 3, 1, 2], 4, 5, 0)
    assert d.finish() == dyn
    merged = dict(read_entries(dyn))
    assert dict(merged[(1, 2)]) == {3: 6, 4: 1} and merged[(8,)] == [(9, 1)]
    assert merged[(2, 3, 1)] == [(2, 1)]
    # the next run drafts from what the last one saw (strict: (1, 2) has 7 samples, 3 at 86 %)
    assert NgramCache(dynamic_path=dyn).draft([7, 1], 2, 2, 0)[:1] == [3]
    with pytest.raises(SpecsweepError, match="no file"):
        NgramCache().finish()
    fresh = NgramCache()
    fresh.draft([1, 2, 3, 1, 2], 4, 5, 0)
    fresh.finish(tmp_path / "new.lcd")
    assert dict(read_entries(tmp_path / "new.lcd"))[(1, 2)] == [(4, 1), (3, 1)]


# ---- the engine, end to end ---------------------------------------------------------------------

LOOPY = " ".join(["for i in range(10): total = total + values[i] * weights[i]"] * 4)


def test_ngram_cache_in_the_loop_is_lossless(tiny_model):
    opts = runtime.ContextOptions(n_ctx=512, n_batch=128)
    results = []
    with runtime.Model(tiny_model("qwen3-30b-a3b")) as model:
        prompt = model.tokenize(LOOPY)
        for drafter in (None, NgramCache()):
            with runtime.Context(model, opts) as ctx:
                results.append(run_trial(ctx, prompt, 48, drafter))
    base, spec = results
    assert spec.tokens[:48] == base.tokens[:48]
    assert spec.n_drafted > 0
    assert max(i + 1 for i, n in enumerate(spec.drafted_by_pos) if n) <= 8


def test_prior_runs_fill_the_dynamic_cache_as_llama_lookup_leaves_it(tmp_path):
    """Two earlier runs of a text: every n-gram of it counted twice in the dynamic cache, enough
    for the strict thresholds of 3- and 4-grams, so the continuation is drafted; one run is not
    (a 4-gram needs 2 samples there). A dynamic file is extended, not changed."""
    text = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    file = write_entries(tmp_path / "dyn.bin", [((1, 2), [(3, 4)])])
    loaded = nc.load_cache(file)
    two = nc.with_prior_runs(loaded, [text, text])
    assert two[(5, 6, 7, 8)] == {9: 2} and two[(9,)] == {10: 2} and two[(1, 2)] == {3: 4}
    assert nc.load_cache(file).to_dict() == {(1, 2): {3: 4}}
    drafter = NgramCache(dynamic_path=file, prior_texts=[text, text])
    assert drafter.draft([1, 5, 6, 7], 8, 0, 0) == text[4:12]
    assert NgramCache(prior_texts=[text]).draft([1, 5, 6, 7], 8, 0, 0) == []
