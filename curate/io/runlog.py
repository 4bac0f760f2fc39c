"""Quiet runs: what Ray and its native code write to the process's stderr (the core worker's error
lines, warnings) goes to a log file instead of the terminal, and lands in ``OUT/logs/`` with the
Ray session's worker and Ray Data logs when the run ends."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WORKER_LOG_BUDGET = 20 * 2**20  # bytes of Ray's session logs copied into the output, at most


@contextmanager
def stderr_to_file(console) -> Iterator[Path]:
    """File descriptor 2 goes to a temporary log for the block; ``console`` (rich) keeps the
    terminal. fd 2 is restored before an exception leaves the block, so a traceback is seen."""
    handle, name = tempfile.mkstemp(prefix="curate-run-", suffix=".log")
    saved = os.dup(2)
    previous = getattr(console, "_file", None)  # None: rich follows sys.stderr as it changes
    current = console.file
    try:
        on_fd2 = current.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (tests, notebooks) stays as it is
        on_fd2 = False
    terminal = os.fdopen(os.dup(saved), "w", buffering=1) if on_fd2 else None
    os.dup2(handle, 2)
    os.close(handle)
    if terminal is not None:
        console.file = terminal
    try:
        yield Path(name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if terminal is not None:
            console.file = previous  # the setter takes None back: follow sys.stderr again
            terminal.close()


def keep_logs(run_log: Path, output_root: Path | None, session_dir: str | None) -> Path | None:
    """Move the run's log (and Ray's session logs, up to a budget) into ``OUT/logs/``; returns where
    they are: the temporary file itself when the output is not a local curate output, None when
    there was nothing to keep."""
    if output_root is None or not (output_root / ".curate" / "output.json").is_file():
        # not (yet) a curate output: nothing is written into someone else's directory
        if run_log.stat().st_size == 0:
            run_log.unlink()
            return None
        return run_log
    logs = output_root / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    logs.mkdir(exist_ok=True)
    target = logs / f"run-{stamp}.log"
    shutil.move(str(run_log), target)
    target.chmod(0o644)  # mkstemp made it private; the output's other files are not
    if session_dir and Path(session_dir, "logs").is_dir():
        copy_session_logs(Path(session_dir, "logs"), logs / f"ray-{stamp}")
    return logs


def copy_session_logs(source: Path, dest: Path) -> None:
    """Ray Data's logs and the workers' non-empty stderr/stdout files, newest first, within budget."""
    files = [p for p in source.rglob("*") if p.is_file() and p.stat().st_size
             and (p.name.startswith(("worker-", "ray-data")) or p.parent.name == "ray-data")]
    budget = WORKER_LOG_BUDGET
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        size = path.stat().st_size
        if size > budget:
            continue
        budget -= size
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
