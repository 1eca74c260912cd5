"""`specsweep plot RESULTS... -o plots/NAME.html`: the self-contained report page."""

from __future__ import annotations

import os
from pathlib import Path

import click

from specsweep.errors import SpecsweepError


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SpecsweepError(f"cannot write {path}: {e.strerror or e}") from None


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
    from specsweep.report import load, page  # plotly loads only for this command

    sources = load.load(list(results))
    if card:
        sources = load.only_card(sources, card)
    if output is None:
        output = Path("plots") / f"{sources[0].name or 'report'}.html"
    text = page.render(sources, title)
    write_atomically(output, text)
    n = sum(len(s.trials) for s in sources)
    p = sum(len(s.probes) for s in sources)
    click.echo(f"wrote {output} ({len(text) / 2**20:.1f} MiB): {len(sources)} source(s), {n} trials, {p} probes",
               err=True)
