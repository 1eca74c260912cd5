"""The page's unit of answer: one target (and KV type) on one card, with its speculative configs as
the analysis pairs them (each against the baseline of its own blocks), its synthetic acceptance
sweeps and its break-even lines.

A card here is a source's label: the GPU, and the run's name where two runs share a card (a merged
community file gives one source per contribution, so one scope per card and target).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specsweep.analysis import analyze as an
from specsweep.analysis import costmodel
from specsweep.analysis.paired import PairedRow
from specsweep.records.sources import Source
from specsweep.report import shape
from specsweep.report.style import short_patterns


@dataclass
class Scope:
    source: str  # the card's label
    panel: shape.Panel
    rows: list[PairedRow]  # speculative configs with a paired change, in the panel's order
    configs: dict[str, shape.Config]  # cell id -> the panel's config (settings, models, name on the page)
    placements: dict[str, dict] = field(default_factory=dict)  # cell id -> a trial's placement block
    sweeps: dict[str, list[PairedRow]] = field(default_factory=dict)  # arm -> its sweep, by acceptance
    lines: list[costmodel.BreakEven] = field(default_factory=list)  # speed-up against acceptance, per line

    @property
    def title(self) -> str:
        return f"{self.panel.title} · {self.source}"

    def key(self, row: PairedRow) -> str:
        """The config's name on the page (unique within its panel)."""
        c = self.configs.get(row.cell_id)
        return c.key if c is not None else row.cell

    def line_of(self, row: PairedRow) -> costmodel.BreakEven | None:
        """The break-even line through this config: its sweep's, else the one across the target's
        configs."""
        for be in self.lines:
            if any(p["cell"] == row.cell and p["acceptance"] == row.acceptance for p in be.points):
                return be
        return None

    def swept(self, row: PairedRow) -> bool:
        return row.synthetic and row.arm in self.sweeps


def arm_label(r: PairedRow) -> str:
    """A drafter and draft length as the page names it: "mtp n=2", "draft d08 n=4", "dflash n=4
    [server] x4" (the drafting model's name only where it is not the method's own; where it ran
    last)."""
    base, _, n = r.arm.rpartition(" n=")
    run_by = r.run_by
    if run_by and base.endswith(run_by):  # where it ran ([server], x4, a placement) after the length
        base = base[:-len(run_by)]
    run_by = short_patterns(run_by)
    base = base.replace(f"{r.method} · {r.method}", r.method, 1).replace(" · ", " ")
    return f"{base} n={n}{run_by}" if n else r.arm.replace(" · ", " ")


def scopes(panels: list[shape.Panel], analyses: list[an.SourceAnalysis], sources: list[Source]) -> list[Scope]:
    """One scope per panel and card that has trials, in the panels' order, cards in the sources'."""
    by_source = {a.source: a for a in analyses}
    placed = {(s.label, t.get("cell_id")): t["placement"] for s in sources for t in s.trials if t.get("placement")}
    out = []
    for panel in panels:
        for source in panel.sources:
            configs = {c.cell_id: c for (s, _), c in panel.configs.items() if s == source}
            a = by_source.get(source)
            order = {k: i for i, k in enumerate(panel.rows)}
            rows = [r for r in (a.paired if a else []) if r.cell_id in configs and r.change is not None]
            rows.sort(key=lambda r: order.get(configs[r.cell_id].key, 1 << 30))
            scope = Scope(source, panel, rows, configs,
                          {cid: placed[(source, cid)] for cid in configs if (source, cid) in placed})
            for (_, arm), rs in costmodel.sweeps(rows).items():  # a panel is one target file: by arm
                scope.sweeps[arm] = sorted(scope.sweeps.get(arm, []) + rs, key=lambda r: r.acceptance)
            scope.lines = costmodel.break_even(rows) if rows else []
            out.append(scope)
    return out
