"""The `specsweep` command: a click group whose errors are always one line and exit code 2."""

from __future__ import annotations

import signal
import sys

import click

from specsweep import __version__
from specsweep.analysis.command import analyze
from specsweep.analysis.predict_command import predict
from specsweep.contrib.command import contribute, merge
from specsweep.engine import interrupts
from specsweep.errors import SpecsweepError
from specsweep.matrix.command import keys
from specsweep.models.commands import fetch, lock, models
from specsweep.probe.command import probe
from specsweep.report.command import plot
from specsweep.run.check import check
from specsweep.run.command import run
from specsweep.synth.command import synth


class OneLineErrors(click.Group):
    """Usage errors, bad parameters and SpecsweepError all end as `specsweep: error: ...`, exit 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        # Ctrl-C raised inside llama.cpp's log callback would be dropped (specsweep/engine/interrupts.py)
        signal.signal(signal.SIGINT, interrupts.handler)
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("specsweep: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            message = " ".join(e.format_message().split())
            click.echo(f"specsweep: error: {message}", err=True)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="specsweep")
def main() -> None:
    """Does speculative decoding make a llama.cpp model faster on this GPU, and why or why not?"""


main.add_command(synth)
main.add_command(run)
main.add_command(check)
main.add_command(keys)
main.add_command(fetch)
main.add_command(lock)
main.add_command(models)
main.add_command(probe)
main.add_command(plot)
main.add_command(analyze)
main.add_command(predict)
main.add_command(contribute)
main.add_command(merge)

__all__ = ["main", "SpecsweepError"]
