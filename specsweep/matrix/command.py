"""`specsweep keys [METHOD]`: every matrix key a method reads, its default and what it means,
from the registry itself (specsweep/methods.py and matrix/keys.py), so the table never drifts."""

from __future__ import annotations

import click

from specsweep import methods
from specsweep.errors import SpecsweepError


def key_rows(method: str | None = None) -> list[tuple[str, str, str, str]]:
    """(key, default, methods that read it, help) for every key, or those of one method."""
    if method is not None and method not in methods.METHODS:
        raise SpecsweepError(f"unknown method {method!r} (one of {', '.join(methods.NAMES)})")
    names = [method] if method else list(methods.NAMES)
    rows = []
    for key, spec in methods.all_keys().items():
        readers = [n for n in names if key in methods.keys_of(n)]
        if not readers:
            continue
        by_value: dict[str, list[str]] = {}
        for n in readers:
            by_value.setdefault(_show(methods.keys_of(n)[key].default), []).append(n)
        common = max(by_value, key=lambda v: len(by_value[v]))  # the usual default, then the others
        default = "; ".join([common] + [f"{', '.join(ns)}: {v}" for v, ns in by_value.items() if v != common])
        who = "all" if len(readers) == len(methods.NAMES) else ", ".join(readers)
        if who != "all" and set(readers) == set(methods.SPECULATIVE):
            who = "speculative"
        rows.append((key, default, who, spec.help))
    return rows


def _show(value) -> str:
    if value is None or value == "":
        return "unset"
    return str(value).lower() if isinstance(value, bool) else str(value)


@click.command("keys")
@click.argument("method", required=False)
@click.option("--markdown", is_flag=True, help="A Markdown table (docs/matrix.md holds one).")
def keys(method: str | None, markdown: bool) -> None:
    """List the matrix keys (of METHOD, else of every method) with their defaults."""
    rows = key_rows(method)
    if markdown:
        click.echo("| key | default | read by | meaning |\n|---|---|---|---|")
        for k, d, who, h in rows:
            click.echo(f"| `{k}` | {d} | {who} | {h} |")
        return
    width = max(len(r[0]) for r in rows)
    for k, d, who, h in rows:
        click.echo(f"{k.ljust(width)}  {d}  [{who}]  {h}")
