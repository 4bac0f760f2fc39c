"""Quiet runs: native writes to fd 2 land in a log file, the terminal console keeps working, and logs
are moved only into a curate output."""

from __future__ import annotations

import io
import os
import sys

from rich.console import Console

from curate.io.runlog import keep_logs, stderr_to_file


def test_fd2_goes_to_the_log_and_comes_back(tmp_path, capfd):
    console = Console(file=io.StringIO())  # a captured stream is left as it is
    with stderr_to_file(console) as log:
        os.write(2, b"core_worker.cc: a native line\n")
        console.print("progress")
    os.write(2, b"after\n")
    assert log.read_text() == "core_worker.cc: a native line\n"
    assert "after" in capfd.readouterr().err
    assert console.file.getvalue().strip() == "progress"


def test_a_console_on_the_terminal_keeps_the_terminal_then_follows_stderr_again(tmp_path):
    console = Console(stderr=True)  # follows sys.stderr
    saved = sys.stderr
    sys.stderr = os.fdopen(2, "w", closefd=False)  # a terminal-like stderr on fd 2
    try:
        with stderr_to_file(console) as log:
            assert console.file.fileno() != 2  # a duplicate of the terminal, not the log
            os.write(2, b"native\n")
        assert console.file is sys.stderr  # back to following sys.stderr
        assert log.read_text() == "native\n"
    finally:
        sys.stderr.close()
        sys.stderr = saved


def test_logs_move_only_into_a_curate_output(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("x")
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    assert keep_logs(log, foreign, None) == log and not (foreign / "logs").exists()
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert keep_logs(empty, foreign, None) is None and not empty.exists()
    ours = tmp_path / "out"
    (ours / ".curate").mkdir(parents=True)
    (ours / ".curate" / "output.json").write_text("{}")
    session = tmp_path / "session" / "logs"
    session.mkdir(parents=True)
    (session / "worker-1.err").write_text("traceback")
    (session / "raylet.out").write_text("not copied")
    logs = keep_logs(log, ours, str(tmp_path / "session"))
    assert logs == ours / "logs"
    [moved] = logs.glob("run-*.log")
    [ray_dir] = logs.glob("ray-*")
    assert moved.read_text() == "x" and [p.name for p in ray_dir.rglob("*") if p.is_file()] == ["worker-1.err"]
