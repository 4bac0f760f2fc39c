"""Ctrl-C and SIGTERM that never land inside a shard write or a commit.

``install()`` makes SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, except inside
``critical()`` sections: there the signal is held and raised when the outermost section ends. So
when a writer sees the interrupt, every sample in its open shard is whole and it can commit them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state = {"depth": 0, "pending": None}


def _handler(signum, frame) -> None:
    if _state["depth"]:
        _state["pending"] = signum
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT and SIGTERM through the critical-section guard (main thread only; idempotent)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _handler)


def ignore_further() -> None:
    """After the first interrupt: a second Ctrl-C during shutdown must not cut the cleanup short."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


@contextmanager
def critical() -> Iterator[None]:
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise KeyboardInterrupt(signal.Signals(signum).name)
