"""Ctrl-C and SIGTERM that llama.cpp's log callback cannot swallow.

llama.cpp calls back into Python for every log line (runtime._log), thousands of times while a
model loads. A signal handler runs at the next Python bytecode, which is often inside that callback,
and an exception raised there never leaves it: ctypes prints "Exception ignored on calling ctypes
callback function" and returns to C. The interrupt was lost and the run went on (seen on the H200,
2026-12-02: a `timeout` SIGTERM during a run, which finished instead of stopping). So the handler
only raises outside a callback; inside one it leaves the interrupt pending, and the engine raises it
right after the llama.cpp call returns (`check`, after every load, context creation and decode).
"""

from __future__ import annotations

import functools
import threading

_main = threading.main_thread()
_state = {"depth": 0, "pending": False}  # the main thread's callback depth; an interrupt waiting


class in_callback:
    """Marks the main thread as inside a ctypes callback (other threads' callbacks do not matter:
    signal handlers run in the main thread only)."""

    def __enter__(self) -> None:
        if threading.current_thread() is _main:
            _state["depth"] += 1

    def __exit__(self, *exc) -> None:
        if threading.current_thread() is _main:
            _state["depth"] -= 1


def guarded(on_interrupt):
    """Decorates a ctypes callback: its body runs inside `in_callback`, and an interrupt that lands
    in the few bytecodes before the guard is up (seen on an H100, 2026-12-07: a `timeout` SIGTERM
    while the eval callback ran once per graph node, lost there, and the run went on) is left
    pending too; the callback then returns `on_interrupt(*args)`."""
    def wrap(fn):
        @functools.wraps(fn)
        def callback(*args):
            try:
                with in_callback():
                    return fn(*args)
            except KeyboardInterrupt:
                _state["pending"] = True
                return on_interrupt(*args)
        return callback
    return wrap


def handler(signum, frame) -> None:
    """The SIGINT/SIGTERM handler: KeyboardInterrupt now, or as soon as llama.cpp returns."""
    if _state["depth"] > 0:
        _state["pending"] = True
        return
    _state["pending"] = False
    raise KeyboardInterrupt


def check() -> None:
    """Raise an interrupt that arrived inside a callback."""
    if _state["pending"]:
        _state["pending"] = False
        raise KeyboardInterrupt
