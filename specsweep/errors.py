"""The one kind of error a user sees: a single line on stderr and exit code 2."""

import click


class SpecsweepError(click.ClickException):
    """Bad input or an environment problem the user can fix; never a traceback."""

    exit_code = 2
