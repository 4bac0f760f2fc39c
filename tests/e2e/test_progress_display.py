"""`curate run` in a terminal shows what is happening before anything commits: what is starting,
each stage's models loading, first batches, rows through each stage (a real command in a pty)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run_in_terminal(args: list[str]) -> str:
    """The command's terminal output, every redraw of the progress line kept."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "220", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], cwd=REPO, stdin=follower,
                            stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the command closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)[-3000:]
    text = b"".join(chunks).decode(errors="replace").replace("\r", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_the_bar_says_what_is_starting_and_counts_rows_in_flight(tmp_path, sample_dir):
    lines = run_in_terminal(["run", str(REPO / "pipelines" / "local.yaml"), "-o", str(tmp_path / "out"),
                             "--set", f"sources.0.path={sample_dir}", "--set", "sources.0.type=dir",
                             "--set", "output.shard_max_samples=100", "--set", "masks.natural.work_side=640"]
                            ).splitlines()
    frames = [line for line in lines if line.lstrip().startswith("images")]
    assert any("starting Ray" in f for f in frames) and any("loading model" in f for f in frames)
    # before anything is committed (one shard of 100 holds the whole run), rows are counted in flight
    in_flight = [f for f in frames if "committed 0" in f and re.search(r"regions [1-9]", f)]
    assert in_flight, frames[-5:]
    assert any(re.search(r"\b[1-9]\d*/6\b", f) for f in frames if "committed 0" in f)  # the bar moved
