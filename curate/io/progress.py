"""What a run's stages are doing, for a progress display that tells the truth while rows are in
flight (not only when shards commit): actors loading their models, stages on their first batch
(where GPU kernels compile), rows through each stage, and a rate smoothed over the last seconds."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StageState:
    loading: int = 0  # actors building the stage (loading a model)
    ready: int = 0  # actors loaded and not yet stopped
    stopped: int = 0  # actors Ray Data stopped (an idle pool shrinks, and grows again with new ones)
    busy_first: int = 0  # actors on their first batch
    rows: int = 0
    paced: int = 0  # actors waiting for a later stage (ray.masks_lead_calls)


@dataclass
class StageBoard:
    """Per-stage counts, fed by the stage actors (through a Ray actor in a run).

    The display reads the board about once a second, and a stage can load its model and finish its
    first batch between two reads (a small model, a warm cache): such a stage's first moment in each
    phase is held until a read has shown it, so no phase goes unseen however short it was."""

    order: list[str] = field(default_factory=list)
    stages: dict[str, StageState] = field(default_factory=dict)
    held: dict[str, list[StageState]] = field(default_factory=dict)
    # for pacing (the display reads neither): each stage's calls running, by id, with the board's
    # time each began, and its longest call that ended
    calls_running: dict[str, dict[str, float]] = field(default_factory=dict)
    longest_call_s: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def plan(self, names: list[str]) -> None:
        """The plan's stages, in order (reports may come in any order; the last stage's rows are
        the rows on their way to the writers)."""
        for name in names:
            self._stage(name)
        self.order.sort(key=lambda n: names.index(n) if n in names else len(names))

    def _stage(self, name: str) -> StageState:
        if name not in self.stages:
            self.stages[name] = StageState()
            self.order.append(name)
        return self.stages[name]

    def _hold(self, name: str) -> None:
        self.held.setdefault(name, []).append(StageState(**vars(self.stages[name])))

    def loading(self, name: str) -> None:
        state = self._stage(name)
        state.loading += 1
        if state.loading == 1 and state.ready == 0 and state.rows == 0:  # the stage starts loading
            self._hold(name)

    def ready(self, name: str) -> None:
        state = self._stage(name)
        state.loading -= 1
        state.ready += 1

    def stopped(self, name: str) -> None:
        """An actor of ``name``'s that was ready has stopped."""
        state = self._stage(name)
        state.ready -= 1
        state.stopped += 1

    def first_batch(self, name: str, started: bool) -> None:
        state = self._stage(name)
        state.busy_first += 1 if started else -1
        if started and state.busy_first == 1 and state.rows == 0:  # the stage's first batch begins
            self._hold(name)

    def rows(self, name: str, n: int) -> None:
        self._stage(name).rows += n

    def call(self, name: str, call_id: str, started: bool) -> None:
        """A call of ``name``'s began or ended; timed by the board's clock, so actors on other
        machines need not agree on the time."""
        self._stage(name)
        running, now = self.calls_running.setdefault(name, {}), self.clock()
        if started:
            running[call_id] = now
        elif call_id in running:
            self.longest_call_s[name] = max(self.longest_call_s.get(name, 0.0), now - running.pop(call_id))

    def waiting(self, name: str, started: bool) -> None:
        self._stage(name).paced += 1 if started else -1

    def pacing_view(self) -> dict[str, dict]:
        """Each stage's rows, the ages of its calls running now and its longest call that ended
        (for pacing, ``curate.io.pacing``; held moments are the display's)."""
        now = self.clock()
        return {name: {"rows": state.rows,
                       "call_ages_s": [now - began for began in self.calls_running.get(name, {}).values()],
                       "longest_call_s": self.longest_call_s.get(name, 0.0)}
                for name, state in self.stages.items()}

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Each stage's counts; a stage with a held moment shows the oldest one instead (once)."""
        shown = {}
        for name in self.order:
            held = self.held.get(name)
            shown[name] = vars(held.pop(0) if held else self.stages[name]).copy()
        return shown


def describe(snapshot: dict[str, dict[str, int]], rates: dict[str, float]) -> str:
    """One line: what each stage is doing ("regions loading model", "caption first batch",
    "regions 40 (1.2/s)", "documents 12 (0.9/s, 6 actors)", "regions 90 (3.0/s, waiting for later
    stages)" while paced, ``ray.masks_lead_calls``). The actors running are shown where a stage
    has more than one, and those Ray Data has stopped once any has: it shrinks an idle pool and
    grows it again with new actors, each loading its model anew ("documents 900 (4.8/s, 14 actors,
    31 stopped)")."""
    parts = []
    for name, s in snapshot.items():
        if s["rows"] == 0 and s["loading"] > 0 and s["ready"] == 0:
            parts.append(f"{name} loading model")
        elif s["rows"] == 0 and s["busy_first"] > 0:
            parts.append(f"{name} first batch")
        elif s["rows"] or s["ready"]:
            rate = rates.get(name)
            notes = ([f"{rate:.1f}/s"] if rate else []) + ([f"{s['ready']} actors"] if s["ready"] > 1 else [])
            notes += [f"{s['stopped']} stopped"] if s.get("stopped") else []
            notes += ["waiting for later stages"] if s.get("paced") else []
            parts.append(f"{name} {s['rows']}" + (f" ({', '.join(notes)})" if notes else ""))
    return " | ".join(parts) or "starting"


class SmoothedRate:
    """Rows per second over a sliding window of (time, count) samples: an ETA that neither jumps
    with a burst nor sits at zero while work is done."""

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, count: int, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 and c1 > c0 else None


class LineEvery:
    """When the output is a log file and not a terminal (a cluster job, ``nohup``, CI), the bar is
    not redrawn: a plain line every ``every_s`` seconds shows the run moving instead. ``due`` says
    whether it is time for the next one."""

    def __init__(self, every_s: float, start: float | None = None):
        self.every_s = every_s
        self.start = time.monotonic() if start is None else start
        self.last = self.start

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self.last < self.every_s:
            return False
        self.last = now
        return True

    def elapsed(self, now: float | None = None) -> str:
        seconds = int((time.monotonic() if now is None else now) - self.start)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def log_line(elapsed: str, unit: str, done: int, total: int | None, fields: list[str]) -> str:
    """The plain progress line: ``[0:01:05] images 64/300 2.20 images/s ETA 1:47 regions 300 | ...``."""
    return f"[{elapsed}] {unit} {done}/{total} " + " ".join(f for f in fields if f)


def stage_series(log_text: str, unit: str) -> dict[str, list[tuple[int, int]]]:
    """Each stage's rows over time, as (seconds, rows), read back from a run's plain progress lines
    (for benchmarks and for a look at where a run spent its time)."""
    line = re.compile(rf"^\[(\d+):(\d\d):(\d\d)\] {re.escape(unit)} \d+/\S+ (.*)$")
    stage = re.compile(r"(\w+) (\d+)(?: \([^)]*\))?$")
    series: dict[str, list[tuple[int, int]]] = {}
    for text in log_text.splitlines():
        match = line.match(text)
        if not match:
            continue
        seconds = int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3])
        for part in match[4].split(" | "):
            rows = stage.search(part.strip())
            if rows and rows[1] != "committed":
                series.setdefault(rows[1], []).append((seconds, int(rows[2])))
    return series
