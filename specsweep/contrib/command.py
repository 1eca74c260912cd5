"""`specsweep contribute RESULTS... [-o contrib/CARD-DATE.json] [--push REPO]` and
`specsweep merge contrib/*.json -o results/community.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from specsweep.contrib import contribute as contrib
from specsweep.contrib import merge as merging
from specsweep.errors import SpecsweepError
from specsweep.records.sources import load
from specsweep.records.store import write_atomically


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise SpecsweepError(f"{name} must be positive, got {value}")


@click.command("contribute")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The contribution file (default: contrib/<card>-<date>.json).")
@click.option("--card", default=None, help="The card's name (default: the GPU the trials ran on, or the CPU).")
@click.option("--power-limit", "power_limit", type=float, default=None, metavar="W",
              help="The GPU's power limit during the runs, watts, if known.")
@click.option("--graphics-clock", type=float, default=None, metavar="MHZ", help="Graphics clock, if known.")
@click.option("--memory-clock", type=float, default=None, metavar="MHZ", help="Memory clock, if known.")
@click.option("--notes", default=None, help="A line about the setup (cooling, other load, ...).")
@click.option("--drop-unmatched", is_flag=True,
              help="Leave out speculative configs without a baseline measured alike, instead of refusing.")
@click.option("--push", "repo", default=None, metavar="REPO",
              help="Also open a pull request with the file on this Hugging Face dataset repo (owner/name).")
def contribute(results: tuple[Path, ...], output: Path | None, card: str | None, power_limit: float | None,
               graphics_clock: float | None, memory_clock: float | None, notes: str | None, drop_unmatched: bool,
               repo: str | None) -> None:
    """Write the records of RESULTS (results folders, trials or probe JSONL files; one card) as one
    contribution file: no host names or local paths, lossless flags checked, and every speculative
    config measured alike with its baseline."""
    _positive("--power-limit", power_limit)
    _positive("--graphics-clock", graphics_clock)
    _positive("--memory-clock", memory_clock)
    if repo is not None and not contrib.REPO_ID.match(repo):
        raise SpecsweepError(f"--push takes a dataset repo id like owner/name, got {repo!r}")
    sources = load(list(results))
    doc, warnings = contrib.build(sources, card, power_limit, graphics_clock, memory_clock, notes, drop_unmatched)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    output = output or contrib.default_output(doc)
    write_atomically(output, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    lossless = doc["lossless"]
    click.echo(f"wrote {output}: {doc['card']}, {len(doc['trials'])} trials ({lossless['lossless']} lossless), "
               f"{len(doc['probes'])} probes", err=True)
    if repo:
        url = contrib.push(output, repo, doc)
        click.echo(f"opened a pull request on {repo}: {url}")


@click.command("merge")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("results/community.jsonl"),
              show_default=True, help="The merged community file (kept and added to when it exists).")
def merge(files: tuple[Path, ...], output: Path) -> None:
    """Check contribution FILES against the schema and merge the valid, new ones into one JSONL
    file. Invalid files and duplicates are named with the reason; the exit code is then 1."""
    outcome = merging.merge(list(files), output)
    for name, doc in outcome.merged:
        click.echo(f"merged {name}: {doc['card']}, {len(doc['trials'])} trials, {len(doc['probes'])} probes", err=True)
    for name, reason in outcome.rejected:
        click.echo(f"rejected {name}: {reason}", err=True)
    total = outcome.kept + len(outcome.merged)
    if outcome.merged:
        click.echo(f"wrote {output}: {total} contributions ({len(outcome.merged)} new)", err=True)
    else:
        click.echo(f"nothing merged; {output} {'unchanged' if outcome.kept else 'not written'}", err=True)
    if outcome.rejected:
        raise click.exceptions.Exit(1)
