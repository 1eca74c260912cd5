"""The race: the leaders against plain decoding in the blocks design, judged after every round.

Each round adds blocks (two: consecutive Williams rows mirror each other, so a round keeps every
config at the same mean position). After it, from the race's records:
- the leader is the config (or plain decoding) with the highest paired change against plain
  decoding;
- a config is dropped when its paired interval against the leader, or against plain decoding, is
  wholly below zero (clearly slower);
- the race stops when the leader's 95% interval against the runner-up (the best of the rest,
  plain decoding included) excludes zero, or lies within +-1% of it (a tie no budget separates),
  or when nothing but plain decoding is left. Else the next round, while the budget lasts.

The intervals are t-intervals over blocks (each block: the mean over the prompts of log(tok/s)
against the other config in that block), so what varies inside one is the timing of the same
prompts from block to block, not the choice of prompts. Judged after every round, the race looks
at its intervals repeatedly and stops on the first that separates: the last interval is somewhat
narrower than a fresh run's would be, which is why finalists.toml re-measures the finalists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specsweep.analysis.paired import Versus, paired_rows, versus

PLAIN = "plain decoding"
TIE = 0.01  # a leader within +-1% of the runner-up over its whole interval: no budget separates them
ROUND_BLOCKS = 2
MAX_ENTRANTS = 6
PER_FAMILY = 2
MIN_BLOCKS = 4  # the race wants room for at least this many blocks of its entrants


@dataclass
class Standing:
    name: str
    cell_id: str
    change: float | None  # against plain decoding
    interval: tuple[float, float] | None
    n_blocks: int
    acceptance: float | None


@dataclass
class Verdict:
    leader: str
    runner_up: str | None
    against_runner_up: Versus | None
    drop: dict[str, str] = field(default_factory=dict)  # name -> reason
    stop: str = ""


def standings(trials: list[dict], ids: dict[str, str]) -> dict[str, Standing]:
    """Every raced config (name -> cell id) against plain decoding."""
    rows = {r.cell_id: r for r in paired_rows(trials, n_boot=200)[0]}
    out = {}
    for name, cid in ids.items():
        r = rows.get(cid)
        out[name] = Standing(name, cid, r.change if r else None, r.t_interval if r else None,
                             r.n_blocks if r else 0, r.acceptance if r else None)
    return out


def interval_text(ci: tuple[float, float] | None) -> str:
    """A change's interval as the race and the answer print it: "[-1.2%, +3.4%]"."""
    return "" if ci is None else f"[{ci[0]:+.1%}, {ci[1]:+.1%}]"


def judge(trials: list[dict], alive: list[str], ids: dict[str, str], baseline_id: str) -> Verdict:
    """The verdict after a round on the configs still racing (`ids`: name -> cell id, plain
    decoding's included under PLAIN)."""
    table = standings(trials, {n: ids[n] for n in alive})
    score = {n: s.change for n, s in table.items() if s.change is not None}
    score[PLAIN] = 0.0
    leader = max(score, key=lambda n: (score[n], n == PLAIN))
    drop = {}
    for name in alive:
        if name == leader or name not in score:
            continue
        v = versus(trials, ids[name], ids[leader])
        if v.t_interval and v.t_interval[1] < 0:
            drop[name] = (f"clearly slower than {leader}: {v.change:+.1%} {interval_text(v.t_interval)} over "
                          f"{v.n_blocks} blocks")
        elif leader != PLAIN and table[name].interval and table[name].interval[1] < 0:
            drop[name] = (f"clearly slower than plain decoding: {table[name].change:+.1%} "
                          f"{interval_text(table[name].interval)} over {table[name].n_blocks} blocks")
    rest = [n for n in score if n != leader and n not in drop]
    if not rest:
        return Verdict(leader, None, None, drop, "every config is clearly slower than plain decoding")
    runner = max(rest, key=lambda n: (score[n], n == PLAIN))
    v = versus(trials, ids[leader], ids[runner])
    stop = ""
    if v.t_interval and v.t_interval[0] > 0:
        stop = f"{leader} is faster than {runner}: its interval against it excludes zero"
    elif v.t_interval and -TIE <= v.t_interval[0] and v.t_interval[1] <= TIE:
        stop = f"{leader} and {runner} are within {TIE:.0%} of each other over the whole interval: a tie"
    return Verdict(leader, runner, v, drop, stop)


def entrants(ranked: list[dict], per_cell_block_s: float, seconds_left: float) -> list[str]:
    """The leaders of the ranking (best first: {"name", "family"}) that race: as many (up to
    MAX_ENTRANTS, at most PER_FAMILY of one family, so that one family's lengths do not crowd out
    the others) as leave room for MIN_BLOCKS blocks of them and plain decoding in the time left;
    at least one when two blocks of it fit, else none."""
    seen: dict[str, int] = {}
    ranked_names = []
    for r in ranked:
        seen[r["family"]] = seen.get(r["family"], 0) + 1
        if seen[r["family"]] <= PER_FAMILY:
            ranked_names.append(r["name"])
    k = min(MAX_ENTRANTS, len(ranked_names))
    if k == 0:
        return []
    while k > 1 and (k + 1) * per_cell_block_s * MIN_BLOCKS > seconds_left:
        k -= 1
    if k == 1 and 2 * per_cell_block_s * ROUND_BLOCKS > seconds_left:
        return []
    return ranked_names[:k]
