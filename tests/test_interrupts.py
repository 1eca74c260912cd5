"""Ctrl-C and SIGTERM while llama.cpp is calling back into Python for a log line: ctypes drops an
exception raised inside its callback ("Exception ignored on calling ctypes callback function"), so
a plain `raise KeyboardInterrupt` handler loses the interrupt whenever it lands there (a model load
logs thousands of lines). specsweep's handler leaves it pending and the engine raises it once
llama.cpp returns."""

from __future__ import annotations

import ctypes
import os
import signal

import pytest

from specsweep.engine import interrupts, runtime


class _SignalsOnFirstLine(list):
    """A load-log capture that sends SIGUSR1 to this process when llama.cpp logs its first line."""

    def append(self, line):
        if not self:
            os.kill(os.getpid(), signal.SIGUSR1)
        super().append(line)


@pytest.fixture
def usr1():
    old = signal.signal(signal.SIGUSR1, interrupts.handler)
    yield
    signal.signal(signal.SIGUSR1, old)
    interrupts._state["pending"] = False


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # what ctypes prints
def test_the_old_handler_loses_an_interrupt_inside_the_callback(monkeypatch):
    """The failure this guards against, shown with the handler specsweep used before."""
    def plain(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGUSR1, plain)
    try:
        got = _SignalsOnFirstLine()
        monkeypatch.setitem(runtime._state, "capture", got)
        runtime._log(2, b"first line\n", None)  # through ctypes' C thunk, as llama.cpp calls it
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == []  # the callback stopped at the signal, and nothing reached the caller


def test_an_interrupt_inside_the_callback_is_raised_after_it(monkeypatch, usr1):
    got = _SignalsOnFirstLine()
    monkeypatch.setitem(runtime._state, "capture", got)
    runtime._log(2, b"first line\n", None)
    assert got == ["first line\n"]  # the callback ran to its end ...
    with pytest.raises(KeyboardInterrupt):  # ... and the interrupt waits for the engine's check
        interrupts.check()
    interrupts.check()  # once
    with pytest.raises(KeyboardInterrupt):  # outside a callback it is raised at once
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(1000):
            pass


def test_a_signal_during_a_model_load_stops_it_after_the_load(tiny_model, monkeypatch, usr1):
    """The signal lands in the first log line of a real load: Model() frees what llama.cpp made and
    raises KeyboardInterrupt, which the run command turns into closed records and exit 130."""
    path = tiny_model("qwen3.6-35b-a3b")
    freed = []
    real_close = runtime.Model.close
    monkeypatch.setattr(runtime.Model, "close", lambda self: freed.append(bool(self.ptr)) or real_close(self))
    got = _SignalsOnFirstLine()

    class Swapped(dict):
        def __setitem__(self, key, value):  # the load sets its own capture list: ours goes in instead
            super().__setitem__(key, got if key == "capture" and value is not None else value)

    monkeypatch.setattr(runtime, "_state", Swapped(runtime._state))
    with pytest.raises(KeyboardInterrupt):
        runtime.Model(path, ())
    assert len(got) > 10 and freed == [True]  # the load ran to its end, then the model was freed


def test_an_interrupt_before_the_guard_is_up_is_kept_too(monkeypatch, usr1):
    """The window an eval callback (called once per graph node) hits: the signal lands as the
    callback enters, before it marks itself inside one. The decorator keeps it pending all the same,
    and the callback returns its interrupted answer to C instead of stopping half-way."""
    real_enter = interrupts.in_callback.__enter__

    def enter_after_a_signal(self):
        os.kill(os.getpid(), signal.SIGUSR1)  # handled here, at depth 0: raises KeyboardInterrupt
        real_enter(self)

    monkeypatch.setattr(interrupts.in_callback, "__enter__", enter_after_a_signal)
    ran = []

    @ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_bool)
    @interrupts.guarded(lambda ask: not ask)
    def on_node(ask):
        ran.append(ask)
        return True

    assert on_node(True) is False  # the interrupted answer: observe nothing
    assert ran == [] and interrupts._state["depth"] == 0
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()
