"""`specsweep plot RESULTS... -o plots/NAME.html`: the self-contained report page."""

from __future__ import annotations

from pathlib import Path

import click

from specsweep.records.sources import load, only_card
from specsweep.records.store import write_atomically


@click.command("plot")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The HTML file to write (default: plots/<first source>.html).")
@click.option("--title", default=None, help="The page's title (default: the cards shown).")
@click.option("--card", default=None, metavar="NAME",
              help="Only records measured on this card (a part of its name, e.g. H100): results/probe holds "
                   "probes of several cards.")
def plot(results: tuple[Path, ...], output: Path | None, title: str | None, card: str | None) -> None:
    """Write one HTML page (a scatter+bar plotly.js bundle inlined gzip'd, opens offline) from
    RESULTS: results folders (results/<matrix>, results/probe), trials or probe JSONL files,
    contribution files or a merged community file. Several sources (several cards) are shown side
    by side."""
    from specsweep.report import page  # plotly loads only for this command

    sources = load(list(results))
    if card:
        sources = only_card(sources, card)
    if output is None:
        output = Path("plots") / f"{sources[0].name or 'report'}.html"
    text = page.render(sources, title)
    write_atomically(output, text)
    n = sum(len(s.trials) for s in sources)
    p = sum(len(s.probes) for s in sources)
    click.echo(f"wrote {output} ({len(text) / 2**20:.1f} MiB): {len(sources)} source(s), {n} trials, {p} probes",
               err=True)
