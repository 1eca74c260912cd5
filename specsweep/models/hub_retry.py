"""Retrying a Hub request that failed for a passing reason (a 5xx, a 429, a cut or stalled body).

huggingface_hub retries little on the way to a download: its HEAD not at all when called directly,
its GET only on 408/429, a cut body only while bytes keep coming. One 500 would end a fetch that
has hours to go, so the whole call is tried again a few times with a growing wait. A download tried
again starts over: huggingface_hub removes its partial file when a call fails.

SPECSWEEP_HUB_RETRY_WAIT sets the first wait in seconds (default 2; it doubles each time).
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

import click

from specsweep.models.hub_errors import cause, status, transient

T = TypeVar("T")
TRIES = 4


def first_wait() -> float:
    try:
        return max(0.0, float(os.environ.get("SPECSWEEP_HUB_RETRY_WAIT", "2")))
    except ValueError:
        return 2.0


def retrying(what: str, call: Callable[[], T], give_up: Callable[[Exception, int], Exception]) -> T:
    """call(), tried again on a transient error; at the last try, or on any other error, raises
    give_up(error, tries)."""
    wait = first_wait()
    for attempt in range(1, TRIES + 1):
        try:
            return call()
        except Exception as e:
            if not transient(e) or attempt == TRIES:
                raise give_up(e, attempt) from None
            code = status(e)
            reason = f"HTTP {code}" if code else type(cause(e)).__name__
            click.echo(f"{what}: {reason}; trying again in {wait:g} s (try {attempt + 1} of {TRIES})", err=True)
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")
