"""SIGKILL a real `curate run` mid-run (twice), restart it, and compare with an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.test_local_pipeline import pipeline_yaml, records

# whole pipelines through Ray (or subprocesses): minutes on two cores
pytestmark = pytest.mark.slow


def curate_cmd(pipeline: Path) -> list[str]:
    return [sys.executable, "-m", "curate.cli", "run", str(pipeline)]


def run_and_kill_after_parts(pipeline: Path, out: Path, n_parts: int, timeout: float = 240,
                             extra_delay: float = 0.0) -> bool:
    """Start a run; SIGKILL its whole process group ``extra_delay`` seconds after ``n_parts`` parts
    are committed. Returns False if the run finished before that point."""
    proc = subprocess.Popen(curate_cmd(pipeline), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if len(list((out / "parts").glob("*.parquet"))) >= n_parts:
                time.sleep(extra_delay)
                if proc.poll() is not None:
                    return False
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.05)
        raise AssertionError("run made no progress")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_killed_runs_resume_to_exactly_the_uninterrupted_sample_set(tmp_path, sample_dir):
    sources = [{"type": "dir", "path": str(sample_dir)}]
    clean_out, killed_out = tmp_path / "clean", tmp_path / "killed"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean_yaml = pipeline_yaml(tmp_path / "a", sources, clean_out)
    killed_yaml = pipeline_yaml(tmp_path / "b", sources, killed_out)
    for path in (clean_yaml, killed_yaml):  # one sample per shard: many commit points to kill between
        path.write_text(path.read_text().replace("shard_max_samples: 3", "shard_max_samples: 1"))

    subprocess.run(curate_cmd(clean_yaml), cwd=REPO, check=True, capture_output=True)

    # Kills at a commit point, then at seeded random moments after later commits (so a failure replays).
    assert run_and_kill_after_parts(killed_yaml, killed_out, 1)
    # A killed run leaves a manifest that says it is not complete.
    assert '"status": "running"' in (killed_out / "manifest.json").read_text()
    rng = random.Random(7)
    for n_parts in (2, 3):
        # A kill that lands after the last commit finds a finished run; that is fine too.
        run_and_kill_after_parts(killed_yaml, killed_out, n_parts, extra_delay=rng.uniform(0.0, 0.8))
    done = subprocess.run(curate_cmd(killed_yaml), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr

    clean, resumed = records(clean_out), records(killed_out)
    keys = [r["key"] for r in resumed]
    assert len(keys) == len(set(keys)), "a sample was written twice"
    assert sorted(keys) == sorted(r["key"] for r in clean)
    by_key = {r["key"]: r for r in clean}
    for rec in resumed:
        assert rec == by_key[rec["key"]]
    assert not list(killed_out.rglob("*.tmp"))
    shards = {p.stem for p in (killed_out / "shards").glob("*.tar")}
    parts = {p.stem for p in (killed_out / "parts").glob("*.parquet")}
    assert shards <= parts


def test_ctrl_c_commits_says_how_to_resume_and_resumes_to_the_clean_set(tmp_path, sample_dir):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) at seeded moments after
    commits: exit 130 with one line and no traceback, a manifest that says interrupted, and a
    resume that ends with the uninterrupted run's samples."""
    sources = [{"type": "dir", "path": str(sample_dir)}]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clean_yaml = pipeline_yaml(tmp_path / "a", sources, tmp_path / "clean")
    stopped_yaml = pipeline_yaml(tmp_path / "b", sources, tmp_path / "stopped")
    for path in (clean_yaml, stopped_yaml):
        path.write_text(path.read_text().replace("shard_max_samples: 3", "shard_max_samples: 1"))
    clean_run = subprocess.run(curate_cmd(clean_yaml), cwd=REPO, check=True, capture_output=True, text=True)
    # stderr is no terminal here: Ray Data's status blocks stay in its log file, off the console
    assert "logging_progress" not in clean_run.stderr, clean_run.stderr[-2000:]

    rng = random.Random(11)
    manifest = tmp_path / "stopped" / "manifest.json"
    interrupted = 0
    for _ in range(2):
        # A seeded moment while Ray works (its rows arrive in bursts, so waiting for a commit and then
        # signalling mostly finds the run already done).
        proc = subprocess.Popen(curate_cmd(stopped_yaml), cwd=REPO, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(10.0, 25.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # the run finished before the signal: nothing to check here
            continue
        assert proc.returncode == 130, err[-3000:]
        assert "Traceback" not in err, err[-4000:]
        assert "run the same command again to resume" in " ".join(err.split()), err[-4000:]
        # An interrupt before the first commit gives the new output back; after it, the manifest says so.
        assert not manifest.exists() or '"status": "interrupted"' in manifest.read_text()
        interrupted += 1
    assert interrupted, "no run was interrupted: the check above never ran"
    done = subprocess.run(curate_cmd(stopped_yaml), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    clean, resumed = records(tmp_path / "clean"), records(tmp_path / "stopped")
    keys = [r["key"] for r in resumed]
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(r["key"] for r in clean)
