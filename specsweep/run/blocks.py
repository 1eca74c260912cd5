"""The run order of a blocks design: the cells of a group interleaved so that drift cancels.

A group's cells (those sharing one loaded target) run in blocks. Each block runs every cell once
per prompt, and a cell's effect is measured against the baseline *of its own block*, so a GPU that
warms up or throttles over the run moves both sides of each comparison alike. Two things remain
inside a block, and the orders below are chosen for them:

- Position: a cell always run right after the baseline would always see a slightly different GPU
  than one run last. Block b runs the cells in row b (mod the period) of a Williams design, in
  which every cell takes every position equally often.
- Carry-over: a trial can leave a trace for the next one (heat, caches, the allocator). In a
  Williams design every ordered pair of distinct cells is adjacent equally often, so no cell is
  always preceded by the same neighbour.

`williams(n)` lists its rows so that consecutive rows are mirror images (row 2k+1 is row 2k
reversed): then any even number of blocks already puts every cell at the same mean position,
which cancels a linear drift inside blocks even when a full design is not run.

Several prompts (`block_sequence`): prompt-major, the cells in the block's order for the first
prompt, then the reverse order for the second, and so on alternately. Prompt-major keeps a cell
and its baseline close in time on the same prompt (the pairing). Alternating the direction (a)
cancels a linear drift inside a block outright for an even number of prompts (a cell at position
p forward is at n-1-p backward), and (b) makes every seam between prompts a cell followed by
itself, so the only pairs of distinct adjacent cells are those of the row and its reverse, both
balanced in the design. Without it every seam would pair the row's last cell with its first: in
the Williams square always two cells n/2 apart, an unbalanced carry-over.

Resume (`blocks_to_run`) works at block granularity. A complete block is skipped. A block with
only some of its trials on disk is run again whole, as a new attempt (previous attempt + 1): the
pairing within a block needs its cells measured close together, in one process, on a GPU in one
state, so trials from a killed process must not be paired with trials from the next one. The
earlier partial trials stay on disk (records are append-only) and are superseded: the analysis
uses the latest complete attempt of each block (`complete_blocks`). Completeness is judged per
attempt, which is why the keys carry the attempt: two killed attempts of a block could together
hold every (cell, prompt) while neither is a block measured in one go.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from specsweep.errors import SpecsweepError


def williams(n: int) -> list[list[int]]:
    """A Williams design for n cells: every cell in every position equally often and every ordered
    pair (a, b), a != b, adjacent (a right before b) equally often.

    Even n: n rows (a balanced Latin square), each pair adjacent once. Odd n: 2n rows (the square
    and its mirror image), each pair adjacent twice, each cell twice in each position. Built from
    the standard first row 0, 1, n-1, 2, n-2, ... with row i = first row + i (mod n); listed so that
    each odd-numbered row is the mirror image of the one before it (see the module docstring).
    """
    if n < 1:
        raise SpecsweepError(f"a blocks design needs at least one cell, not {n}")
    first = [0]
    lo, hi = 1, n - 1
    while len(first) < n:  # 0, 1, n-1, 2, n-2, ...
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    square = [[(c + i) % n for c in first] for i in range(n)]
    if n == 1:
        return square
    if n % 2:
        # the square alone leaves each pair adjacent in one direction only; its mirror adds the other
        return [row for r in square for row in (r, r[::-1])]
    # for even n the square already holds each row's mirror: row i + n/2 is row i reversed
    half = n // 2
    return [row for i in range(half) for row in (square[i], square[i + half])]


def position_counts(orders: list[list[int]]) -> list[list[int]]:
    """counts[cell][position]: how many orders put the cell at that position."""
    n = len(orders[0]) if orders else 0
    counts = [[0] * n for _ in range(n)]
    for order in orders:
        for pos, cell in enumerate(order):
            counts[cell][pos] += 1
    return counts


def carryover_counts(orders: list[list[int]]) -> list[list[int]]:
    """counts[a][b]: how many times cell a runs immediately before cell b within an order."""
    n = len(orders[0]) if orders else 0
    counts = [[0] * n for _ in range(n)]
    for order in orders:
        for a, b in zip(order, order[1:]):
            counts[a][b] += 1
    return counts


def _off_diagonal(counts: list[list[int]]) -> list[int]:
    return [c for a, row in enumerate(counts) for b, c in enumerate(row) if a != b]


def is_balanced(orders: list[list[int]]) -> bool:
    """Every cell equally often in every position, every ordered pair of distinct cells equally
    often adjacent, and each order a permutation of the same cells."""
    if not orders:
        return False
    n = len(orders[0])
    if any(sorted(o) != list(range(n)) for o in orders):
        return False
    positions = {c for row in position_counts(orders) for c in row}
    pairs = set(_off_diagonal(carryover_counts(orders)))
    return len(positions) == 1 and len(pairs) <= 1


@dataclass(frozen=True)
class BlockPlan:
    """The orders of a group's blocks: block b runs the cells in `orders[b]` (cell indices)."""

    n_cells: int
    requested: int | None     # the block count asked for (None: one full design)
    n_blocks: int             # the block count that will run
    period: int               # rows in the Williams design: a multiple of it is balanced
    orders: list[list[int]]
    rounded_up: bool
    balanced: bool
    positions: list[list[int]]  # position_counts(orders)
    carryover_min: int          # over ordered pairs of distinct cells (0 and 0 for one cell)
    carryover_max: int
    note: str                   # "" or one line: the rounding made, or the imbalance left


def plan_blocks(n_cells: int, n_blocks: int | None, round_up: bool = True) -> BlockPlan:
    """The blocks of a group of `n_cells` cells. `n_blocks` None runs one full design. A count that
    is not a multiple of the design's period is rounded up to one (`round_up`, said in `note`) or
    kept, with the imbalance it leaves reported in `note`, `positions` and `carryover_min/max`."""
    if n_blocks is not None and n_blocks < 1:
        raise SpecsweepError(f"blocks must be at least 1, not {n_blocks}")
    rows = williams(n_cells)
    period = len(rows)
    count = period if n_blocks is None else n_blocks
    rounded = False
    if count % period and round_up:
        count = -(-count // period) * period
        rounded = True
    orders = [list(rows[b % period]) for b in range(count)]
    positions = position_counts(orders)
    pairs = _off_diagonal(carryover_counts(orders)) or [0]
    balanced = is_balanced(orders)
    design = f"the Williams design for {n_cells} cell{'s' if n_cells != 1 else ''} has {period} orders"
    if rounded:
        note = f"blocks rounded up from {n_blocks} to {count}: {design}, and only whole designs are balanced"
    elif balanced:
        note = ""
    else:
        spread = [max(row) - min(row) for row in positions]
        note = (f"{count} blocks are not a multiple of {period} ({design}), so the order is not balanced: "
                f"a cell's count at one position differs from another position's by up to {max(spread)}, and "
                f"ordered pairs of cells are adjacent {min(pairs)}-{max(pairs)} times (the records' `position` "
                f"gives the full picture)")
    return BlockPlan(n_cells=n_cells, requested=n_blocks, n_blocks=count, period=period, orders=orders,
                     rounded_up=rounded, balanced=balanced, positions=positions,
                     carryover_min=min(pairs), carryover_max=max(pairs), note=note)


def block_sequence(order: list[int], prompts: list[str]) -> list[tuple[int, str]]:
    """The trials of one block in run order, as (cell index, prompt): prompt-major, the block's
    order for the first prompt, its reverse for the second, and so on alternately (the module
    docstring says why)."""
    return [(cell, prompt) for k, prompt in enumerate(prompts)
            for cell in (order if k % 2 == 0 else order[::-1])]


@dataclass(frozen=True)
class BlockTodo:
    """One block to run: its trials in order, as (cell id, prompt id), under `attempt`."""

    block: int
    attempt: int                    # 0 for a block never started; previous attempt + 1 otherwise
    order: list[int]                # cell indices, the Williams row
    trials: list[tuple[str, str]]   # (cell_id, prompt_id) in run order


def _attempts(recorded: set[tuple[int, int, str, str]]) -> dict[int, dict[int, set[tuple[str, str]]]]:
    by_block: dict[int, dict[int, set[tuple[str, str]]]] = defaultdict(lambda: defaultdict(set))
    for block, attempt, cell, prompt in recorded:
        by_block[block][attempt].add((cell, prompt))
    return by_block


def complete_blocks(recorded: set[tuple[int, int, str, str]], cells: list[str],
                    prompts: list[str]) -> dict[int, int]:
    """{block: the attempt that counts}: the latest attempt holding every (cell, prompt). Trials of
    other attempts of these blocks, and of blocks missing here, are superseded or unfinished."""
    wanted = {(c, p) for c in cells for p in prompts}
    done = {}
    for block, attempts in _attempts(recorded).items():
        full = [a for a, keys in attempts.items() if wanted <= keys]
        if full:
            done[block] = max(full)
    return done


def blocks_to_run(recorded: set[tuple[int, int, str, str]], n_blocks: int, cells: list[str],
                  prompts: list[str]) -> list[BlockTodo]:
    """The blocks still to run, in block order. `recorded` holds (block, attempt, cell_id,
    prompt_id) for every trial on disk. A block with a complete attempt is skipped; a partial one
    is run again whole under attempt max + 1; a block never started runs as attempt 0. Block b
    uses row b mod period of `williams(len(cells))`, as `plan_blocks` does."""
    if not cells or not prompts:
        raise SpecsweepError("a blocks design needs at least one cell and one prompt")
    if len(set(cells)) != len(cells) or len(set(prompts)) != len(prompts):
        raise SpecsweepError("a blocks design needs distinct cell ids and prompt ids")
    rows = williams(len(cells))
    done = complete_blocks(recorded, cells, prompts)
    attempts = _attempts(recorded)
    todo = []
    for b in range(n_blocks):
        if b in done:
            continue
        order = rows[b % len(rows)]
        attempt = max(attempts[b]) + 1 if b in attempts else 0
        trials = [(cells[c], p) for c, p in block_sequence(order, prompts)]
        todo.append(BlockTodo(block=b, attempt=attempt, order=list(order), trials=trials))
    return todo
