"""The `specsweep` command: a click group whose errors are always one line and exit code 2.

Each subcommand's module is imported when that subcommand runs (or its help is shown), not at
start-up: `run` and `probe` load libllama (llama-cpp-python) through the engine, and a contributor
who only draws, analyses or merges files needs none of it (tests/test_light_imports.py).
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from specsweep import __version__
from specsweep.engine import interrupts  # pure Python: the signal handler, no libllama
from specsweep.errors import SpecsweepError

# name -> "module:attribute" of the click command
COMMANDS = {
    "analyze": "specsweep.analysis.command:analyze",
    "check": "specsweep.run.check:check",
    "contribute": "specsweep.contrib.command:contribute",
    "fetch": "specsweep.models.commands:fetch",
    "keys": "specsweep.matrix.command:keys",
    "lock": "specsweep.models.commands:lock",
    "merge": "specsweep.contrib.command:merge",
    "models": "specsweep.models.commands:models",
    "plot": "specsweep.report.command:plot",
    "predict": "specsweep.analysis.predict_command:predict",
    "probe": "specsweep.probe.command:probe",
    "run": "specsweep.run.command:run",
    "synth": "specsweep.synth.command:synth",
    "tune": "specsweep.tune.command:tune",
}


class OneLineErrors(click.Group):
    """Usage errors, bad parameters and SpecsweepError all end as `specsweep: error: ...`, exit 2;
    subcommands load on first use (COMMANDS)."""

    def list_commands(self, ctx) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

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


__all__ = ["main", "SpecsweepError"]
