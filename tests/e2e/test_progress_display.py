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
    out = tmp_path / "out"
    command = ["run", str(REPO / "pipelines" / "local.yaml"), "-o", str(out),
               "--set", f"sources.0.path={sample_dir}", "--set", "sources.0.type=dir",
               "--set", "output.shard_max_samples=100", "--set", "output.shard_max_seconds=600",
               "--set", "masks.natural.work_side=640", "--set", "ray.ingest_batch_size=1"]
    printed = run_in_terminal(command)
    frames = [line for line in printed.splitlines() if line.lstrip().startswith("images")]
    assert any("starting Ray" in f for f in frames) and any("loading model" in f for f in frames)
    # before anything is committed (one shard of 100 holds the whole run), rows are counted in flight;
    # listed one per block, the first rows reach the last stage while later ones are still segmented
    in_flight = [f for f in frames if "committed 0" in f and re.search(r"regions [1-9]", f)]
    assert in_flight, frames[-5:]
    assert any(re.search(r"\b[1-9]\d*/6\b", f) for f in frames if "committed 0" in f)  # the bar moved
    # quiet: Ray's native lines and warnings are in the output's logs, not on the terminal
    assert "core_worker" not in printed and "WARNING" not in printed
    [log] = (out / "logs").glob("run-*.log")
    assert f"logs (Ray's warnings, worker logs): {out / 'logs'}" in " ".join(printed.split())
    assert "core_worker" in log.read_text() or log.read_text() == ""
    # the same command again: everything is committed, and the bar's last word says so
    again = run_in_terminal(command)
    last = [line for line in again.splitlines() if line.lstrip().startswith("images")][-1]
    assert "resuming: 6 inputs already done, 0 to go" in again and "nothing left to do" in last, last


def test_a_run_prints_a_short_summary_and_commits_on_time(tmp_path, sample_dir):
    """Not a terminal (make demo, CI logs): a few lines; shards close on shard_max_seconds while rows
    still come (6 samples, far below shard_max_samples, listed in blocks of 2, end up in several
    shards; rows travel the plan in their listing blocks, so those bound how often a shard can close)."""
    from curate.io.index import read_parts
    from curate.io.layout import OutputLayout

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(REPO / "pipelines" / "local.yaml"),
                           "-o", str(out), "--set", f"sources.0.path={sample_dir}", "--set", "sources.0.type=dir",
                           "--set", "masks.natural.work_side=640", "--set", "output.shard_max_samples=100",
                           "--set", "output.shard_max_seconds=0.5", "--set", "ray.ingest_batch_size=2",
                           "--set", "ray.progress_log_every_s=2"],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    # no bar is redrawn in a log: a plain line every progress_log_every_s says how far the run got
    timed = [line for line in printed.splitlines() if re.match(r"\[0:0\d:\d\d\] images \d+/6\b", line)]
    assert timed and any("regions" in line for line in timed), printed[-3000:]
    assert len(printed.splitlines()) - len(timed) < 40 and "core_worker" not in printed
    shards = {r["shard"] for r in read_parts(OutputLayout(out)).to_pylist() if r["shard"]}
    assert len(shards) > 1, shards


def test_a_refused_output_gets_no_logs_written_into_it(tmp_path, sample_dir):
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a curate output")
    done = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(REPO / "pipelines" / "local.yaml"),
                           "-o", str(foreign), "--set", f"sources.0.path={sample_dir}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    printed = done.stdout + done.stderr
    assert done.returncode != 0 and "not empty" in printed and "logs (" not in printed
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
