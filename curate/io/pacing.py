"""Keeping the mask stage from running far ahead of the captions when they share a GPU.

Unpaced, the masks finish early: while they run they take GPU time from the captions, and then leave
the captions alone on a GPU that one caption process keeps only partly busy (an H200 run: caption
calls took 55-60 s beside the masks and 35 s after them, benchmarks/RESULTS.md). Ray Data's own
backpressure counts object-store bytes, and rows of about half a megabyte never reach it. Paced, the
mask stage waits before a batch while enough rows are already on their way to the captions, so its
work fills the captions' idle time instead.

It waits only while a caption call is running. Ray Data hands a task's output on when the whole task
ends (its batches share an output block), so rows the masks count as passed on may not have left
yet; captions with no call running are waiting for rows, and masks that waited on them would wait
forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# A call running longer than this many times the stage's longest finished call (and at least
# STALE_CALL_FLOOR_S) is taken for one whose actor died mid-call: it never says it ended, and masks
# that went on waiting for it would wait on captions that are waiting for rows.
STALE_CALL_FACTOR = 3.0
STALE_CALL_FLOOR_S = 120.0


def rows_ahead(board: dict[str, dict], upstream: str, downstream: str) -> int:
    """Rows the upstream stage has passed on that the downstream stage has not yet returned (rows
    between them, in their queues, or in a downstream call); ``board`` holds each stage's ``rows``."""
    return board.get(upstream, {}).get("rows", 0) - board.get(downstream, {}).get("rows", 0)


def lead_rows(lead_calls: int, rows_per_call: int, downstream_actors: int) -> int:
    """How many rows the masks may be ahead: ``lead_calls`` caption calls, and never fewer than one
    call per caption actor plus the one being gathered, so that a caption actor finishing a call
    finds its next one ready."""
    return max(lead_calls, downstream_actors + 1) * rows_per_call


def live_calls(call_ages_s: list[float], longest_call_s: float) -> int:
    """Calls running now that can still end: younger than ``STALE_CALL_FACTOR`` times the longest
    call that did end, and than ``STALE_CALL_FLOOR_S``, whichever is more. A dead actor's call thus
    holds the masks back once, for at most that long, never batch after batch."""
    bound = max(STALE_CALL_FLOOR_S, STALE_CALL_FACTOR * longest_call_s)
    return sum(age < bound for age in call_ages_s)


def should_wait(board: dict[str, dict], upstream: str, downstream: str, limit: int) -> bool:
    """Whether the upstream stage waits: ``limit`` rows or more ahead, and a downstream call running
    that can still end (``board``: each stage's ``rows``, ``call_ages_s`` and ``longest_call_s``, as
    the progress board's ``pacing_view`` gives them)."""
    if rows_ahead(board, upstream, downstream) < limit:
        return False
    calls = board.get(downstream, {})
    return live_calls(calls.get("call_ages_s", []), calls.get("longest_call_s", 0.0)) > 0


@dataclass
class Pacer:
    """Waits (``wait``) while ``should_wait`` says so; ``read_board`` reads the run's progress board
    (each stage's rows and the calls running)."""

    upstream: str
    downstream: str
    limit: int
    read_board: Callable[[], dict[str, dict]]
    poll_s: float = 0.25
    # a backstop: should_wait already stops counting a call that outlived live_calls' bound
    max_wait_s: float = 600.0
    sleep: Callable[[float], None] = time.sleep
    on_wait: Callable[[bool], None] = lambda waiting: None  # told when a wait starts and when it ends

    def wait(self) -> None:
        waited = 0.0
        while waited < self.max_wait_s and should_wait(self.read_board(), self.upstream, self.downstream,
                                                       self.limit):
            if waited == 0:
                self.on_wait(True)
            self.sleep(self.poll_s)
            waited += self.poll_s
        if waited:
            self.on_wait(False)
