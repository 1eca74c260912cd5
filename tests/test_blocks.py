"""The blocks design: Williams orders, block plans, the order within a block, resume, and a
simulation showing that blocks cancel drift where running cells one after another does not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from specsweep.errors import SpecsweepError
from specsweep.run.blocks import (block_sequence, blocks_to_run, carryover_counts, complete_blocks,
                                  is_balanced, plan_blocks, position_counts, williams)


# --- the Williams design -------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 10))
def test_williams_is_balanced(n):
    rows = williams(n)
    assert len(rows) == (n if n % 2 == 0 or n == 1 else 2 * n)
    assert all(sorted(r) == list(range(n)) for r in rows)
    per = 1 if n % 2 == 0 or n == 1 else 2
    assert position_counts(rows) == [[per] * n for _ in range(n)]
    pairs = carryover_counts(rows)
    for a, b in itertools.product(range(n), repeat=2):
        assert pairs[a][b] == (0 if a == b else per), (a, b)
    assert is_balanced(rows)


def test_williams_rows_come_from_the_standard_first_row():
    rows = williams(6)
    assert rows[0] == [0, 1, 5, 2, 4, 3]
    first = rows[0]
    assert sorted(map(tuple, rows)) == sorted(tuple((c + i) % 6 for c in first) for i in range(6))
    # odd n: the square rows (first + i) and their mirrors
    first5 = [0, 1, 4, 2, 3]
    expected = {tuple((c + i) % 5 for c in first5) for i in range(5)}
    expected |= {r[::-1] for r in expected}
    assert set(map(tuple, williams(5))) == expected


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_consecutive_rows_are_mirrors_so_even_block_counts_centre_every_cell(n):
    rows = williams(n)
    for k in range(0, len(rows), 2):
        assert rows[k + 1] == rows[k][::-1]
    for count in range(2, len(rows), 2):  # truncated designs of an even length
        mean_pos = [sum(p * c for p, c in enumerate(row)) / count for row in position_counts(rows[:count])]
        assert mean_pos == [pytest.approx((n - 1) / 2)] * n


def test_checkers_see_imbalance():
    cyclic = [[(c + i) % 4 for c in range(4)] for i in range(4)]  # positions balanced, pairs not
    assert position_counts(cyclic) == [[1] * 4] * 4
    assert carryover_counts(cyclic)[0][1] == 3 and carryover_counts(cyclic)[1][0] == 0
    assert not is_balanced(cyclic)
    assert not is_balanced([[0, 1, 2]] * 3)
    assert not is_balanced([[0, 1, 1]])
    with pytest.raises(SpecsweepError):
        williams(0)


# --- block plans ---------------------------------------------------------------------------------

def test_plan_default_is_one_full_design():
    plan = plan_blocks(4, None)
    assert (plan.n_blocks, plan.period, plan.rounded_up, plan.balanced, plan.note) == (4, 4, False, True, "")
    assert plan.orders == williams(4)
    assert plan_blocks(3, None).n_blocks == 6
    one = plan_blocks(1, 3)
    assert one.orders == [[0]] * 3 and one.balanced and one.note == ""


def test_plan_uses_row_b_mod_period():
    plan = plan_blocks(4, 8)
    assert plan.orders == williams(4) * 2 and plan.balanced and not plan.rounded_up
    assert (plan.carryover_min, plan.carryover_max) == (2, 2)


def test_plan_rounds_up_to_a_full_design_and_says_so():
    plan = plan_blocks(3, 4)
    assert plan.n_blocks == 6 and plan.requested == 4 and plan.rounded_up and plan.balanced
    assert "rounded up from 4 to 6" in plan.note
    assert plan_blocks(4, 5).n_blocks == 8


def test_plan_keeps_the_count_and_reports_the_imbalance():
    plan = plan_blocks(3, 4, round_up=False)
    assert plan.n_blocks == 4 and not plan.rounded_up and not plan.balanced
    assert plan.orders == williams(3)[:4]
    assert plan.positions == position_counts(williams(3)[:4])
    assert sum(plan.positions[0]) == 4 and min(map(min, plan.positions)) < max(map(max, plan.positions))
    pairs = [c for a, row in enumerate(carryover_counts(plan.orders)) for b, c in enumerate(row) if a != b]
    assert (plan.carryover_min, plan.carryover_max) == (min(pairs), max(pairs)) == (1, 2)
    assert "not balanced" in plan.note and "1-2 times" in plan.note
    worst = max(max(row) - min(row) for row in plan.positions)
    assert f"differs from another position's by up to {worst}" in plan.note


def test_plan_rejects_no_blocks():
    with pytest.raises(SpecsweepError, match="at least 1"):
        plan_blocks(3, 0)


# --- the order within a block --------------------------------------------------------------------

def test_block_sequence_is_prompt_major_and_alternates():
    seq = block_sequence([2, 0, 1], ["a", "b", "c"])
    assert seq == [(2, "a"), (0, "a"), (1, "a"), (1, "b"), (0, "b"), (2, "b"), (2, "c"), (0, "c"), (1, "c")]


@pytest.mark.parametrize("n, n_prompts", [(4, 2), (4, 3), (5, 2), (3, 4)])
def test_alternation_keeps_distinct_neighbours_balanced(n, n_prompts):
    """Over a full design, the trials of a block in time order: every ordered pair of distinct
    cells is adjacent equally often; the seams between prompts only repeat a cell."""
    prompts = [f"p{k}" for k in range(n_prompts)]
    counts = np.zeros((n, n), int)
    for order in williams(n):
        cells = [c for c, _ in block_sequence(order, prompts)]
        for a, b in zip(cells, cells[1:]):
            counts[a, b] += 1
    off = counts[~np.eye(n, dtype=bool)]
    assert off.min() == off.max() > 0
    assert len(set(np.diag(counts))) == 1  # each cell repeats at a seam equally often


def test_without_alternation_seams_would_unbalance_pairs():
    """The reason for alternating: repeating the order puts (last, first) at every seam."""
    counts = np.zeros((4, 4), int)
    for order in williams(4):
        cells = order * 2
        for a, b in zip(cells, cells[1:]):
            counts[a, b] += 1
    off = counts[~np.eye(4, dtype=bool)]
    assert off.min() < off.max()


# --- resume --------------------------------------------------------------------------------------

CELLS = ["base", "c1", "c2"]
PROMPTS = ["p1", "p2"]


def keys(block, attempt, pairs=None):
    pairs = pairs if pairs is not None else [(c, p) for c in CELLS for p in PROMPTS]
    return {(block, attempt, c, p) for c, p in pairs}


def test_resume_runs_everything_when_nothing_is_recorded():
    todo = blocks_to_run(set(), 6, CELLS, PROMPTS)
    assert [t.block for t in todo] == list(range(6)) and all(t.attempt == 0 for t in todo)
    assert [t.order for t in todo] == williams(3)
    assert todo[1].trials == [(CELLS[c], p) for c, p in block_sequence(williams(3)[1], PROMPTS)]


def test_resume_skips_complete_blocks_and_reruns_partial_ones_whole():
    recorded = keys(0, 0) | keys(1, 0, [("base", "p1"), ("c1", "p1")]) | keys(3, 0)
    todo = blocks_to_run(recorded, 5, CELLS, PROMPTS)
    assert [(t.block, t.attempt) for t in todo] == [(1, 1), (2, 0), (4, 0)]
    assert len(todo[0].trials) == len(CELLS) * len(PROMPTS)  # the partial block, whole again
    assert todo[0].order == williams(3)[1] and todo[2].order == williams(3)[4]


def test_resume_judges_completeness_per_attempt():
    # two killed attempts that together hold every trial: neither is a block measured in one go
    first_half = [(c, p) for c in CELLS for p in PROMPTS][:3]
    second_half = [(c, p) for c in CELLS for p in PROMPTS][3:]
    recorded = keys(0, 0, first_half) | keys(0, 1, second_half)
    todo = blocks_to_run(recorded, 1, CELLS, PROMPTS)
    assert [(t.block, t.attempt) for t in todo] == [(0, 2)]
    assert complete_blocks(recorded, CELLS, PROMPTS) == {}


def test_the_latest_complete_attempt_counts():
    recorded = keys(0, 0, [("base", "p1")]) | keys(0, 1) | keys(1, 0) | keys(2, 2) | keys(2, 3, [("c1", "p2")])
    assert complete_blocks(recorded, CELLS, PROMPTS) == {0: 1, 1: 0, 2: 2}
    assert blocks_to_run(recorded, 3, CELLS, PROMPTS) == []


def test_resume_with_a_new_cell_reruns_blocks_without_it():
    recorded = keys(0, 0)
    todo = blocks_to_run(recorded, 1, CELLS + ["c3"], PROMPTS)
    assert [(t.block, t.attempt) for t in todo] == [(0, 1)] and todo[0].order == williams(4)[0]


def test_resume_rejects_empty_or_duplicate_ids():
    with pytest.raises(SpecsweepError):
        blocks_to_run(set(), 2, [], PROMPTS)
    with pytest.raises(SpecsweepError):
        blocks_to_run(set(), 2, ["a", "a"], PROMPTS)


# --- simulation: drift during a run --------------------------------------------------------------
# A fake engine whose log speed drifts during the run (each trial takes one unit of time), cells
# with no true effect (cell 0 is the baseline), prompts with different base speeds. Each design is
# estimated the same way: per block, the mean over prompts of log(cell / baseline of that block);
# then a 95% t-interval over blocks. Repeated over many simulated runs, a sound design's intervals
# cover the true effect (zero) about 95% of the time.

N_CELLS, BLOCKS, RUNS = 4, 8, 300
PROMPT_SPEED = {"p0": 0.0, "p1": 0.3, "p2": -0.2}


def linear(total=-0.10):
    return lambda frac: total * frac          # the GPU slows by 10% over the run (warming, throttling)


def step(at=0.4, drop=-0.05):
    return lambda frac: drop if frac >= at else 0.0   # a clock step part way through


def sequential_schedule(prompts):
    """Cells one after another, all trials of a cell together; a 'block' is the repetition index."""
    return [(r, c, p) for c in range(N_CELLS) for r in range(BLOCKS) for p in prompts]


def blocks_schedule(orders, prompts):
    return [(b, c, p) for b, order in enumerate(orders) for c, p in block_sequence(order, prompts)]


def measure(schedule, drift, noise, rng):
    n = len(schedule)
    return {key: PROMPT_SPEED[key[2]] + drift(t / n) + rng.normal(0.0, noise) for t, key in enumerate(schedule)}


def estimate(y, prompts, cell, paired=True):
    """(mean, half-width) of the cell's log ratio to the baseline, a t-interval over blocks."""
    base_all = {p: np.mean([y[b, 0, p] for b in range(BLOCKS)]) for p in prompts}
    per_block = [np.mean([y[b, cell, p] - (y[b, 0, p] if paired else base_all[p]) for p in prompts])
                 for b in range(BLOCKS)]
    half = stats.t.ppf(0.975, BLOCKS - 1) * np.std(per_block, ddof=1) / np.sqrt(BLOCKS)
    return float(np.mean(per_block)), float(half)


def coverage(schedule, drift, noise, prompts, seed=0, paired=True):
    """Per non-baseline cell, the share of runs whose interval covers zero; the mean half-width."""
    rng = np.random.default_rng(seed)
    covered, halves = np.zeros((RUNS, N_CELLS - 1), bool), []
    for run in range(RUNS):
        y = measure(schedule, drift, noise, rng)
        for cell in range(1, N_CELLS):
            mean, half = estimate(y, prompts, cell, paired)
            covered[run, cell - 1] = abs(mean) <= half
            halves.append(half)
    return covered.mean(axis=0), float(np.mean(halves))


PROMPTS3 = ["p0", "p1", "p2"]


@pytest.mark.parametrize("drift, biased_cells", [(linear(), [1, 2, 3]), (step(), [2, 3])], ids=["linear", "step"])
def test_blocks_cancel_drift_that_biases_the_sequential_design(drift, biased_cells):
    orders = plan_blocks(N_CELLS, BLOCKS).orders
    seq_cover, _ = coverage(sequential_schedule(PROMPTS3), drift, 0.005, PROMPTS3)
    blk_cover, _ = coverage(blocks_schedule(orders, PROMPTS3), drift, 0.005, PROMPTS3)
    assert min(blk_cover) >= 0.9     # nominal 0.95: the zero effect is found for every cell
    # sequentially, drift between cells reads as an effect: under the step, cells 2 and 3 run
    # wholly after it (cell 1 straddles it, and its spread widens its own interval)
    assert max(seq_cover[c - 1] for c in biased_cells) <= 0.05


def test_sequential_bias_is_beyond_its_interval_in_one_run():
    rng = np.random.default_rng(1)
    y = measure(sequential_schedule(PROMPTS3), linear(), 0.005, rng)
    mean, half = estimate(y, PROMPTS3, N_CELLS - 1)
    assert mean < -half  # the last cell, run last on the slowest GPU, looks slower


def test_an_unbalanced_order_would_show_bias():
    """The same order in every block: a later cell always runs on a slightly slower GPU than the
    baseline before it. One prompt, since with alternating prompts an even prompt count cancels a
    linear drift inside a block by itself; here the Williams rows have to."""
    one = ["p0"]
    williams_cover, _ = coverage(blocks_schedule(plan_blocks(N_CELLS, BLOCKS).orders, one), linear(), 0.003, one)
    fixed_cover, _ = coverage(blocks_schedule([list(range(N_CELLS))] * BLOCKS, one), linear(), 0.003, one)
    assert min(williams_cover) >= 0.9
    assert fixed_cover[-1] <= 0.05      # the cell run last is off by three trials' drift
    assert fixed_cover.mean() <= 0.6


def test_pairing_within_the_block_narrows_the_interval():
    """Against the baseline's mean over all blocks instead of its own block's, the drift between
    blocks stays in every difference."""
    schedule = blocks_schedule(plan_blocks(N_CELLS, BLOCKS).orders, PROMPTS3)
    _, paired_half = coverage(schedule, linear(), 0.005, PROMPTS3)
    _, unpaired_half = coverage(schedule, linear(), 0.005, PROMPTS3, paired=False)
    assert unpaired_half > 2 * paired_half
