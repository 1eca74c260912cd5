"""The one kind of error a user sees: a single line on stderr and exit code 2."""

import click


class SpecsweepError(click.ClickException):
    """Bad input or an environment problem the user can fix; never a traceback."""

    exit_code = 2


def read_text(path, what: str) -> str:
    """A UTF-8 file's text, or a one-line SpecsweepError naming `what` the file is."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise SpecsweepError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecsweepError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
