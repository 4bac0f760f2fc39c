"""SIGKILL a real `curate run` mid-run (several times), restart it, and compare with an uninterrupted
run: on local disk and on a loopback S3 server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.io.layout import OutputLayout
from curate.io.reader import shard_samples
from tests.conftest import REPO
from tests.e2e.test_local_pipeline import pipeline_yaml
from tests.io.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)

# whole pipelines through Ray (or subprocesses): minutes on two cores
pytestmark = pytest.mark.slow


def curate_cmd(pipeline: Path) -> list[str]:
    return [sys.executable, "-m", "curate.cli", "run", str(pipeline)]


def one_sample_per_shard(folder: Path, sample_dir: Path, out) -> Path:
    """The local pipeline with a commit after every sample: many commit points to kill between."""
    folder.mkdir(parents=True, exist_ok=True)
    path = pipeline_yaml(folder, [{"type": "dir", "path": str(sample_dir)}], out)
    path.write_text(path.read_text().replace("shard_max_samples: 3", "shard_max_samples: 1"))
    return path


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, sample_dir) -> tuple[Path, str]:
    """(output, stderr) of one uninterrupted run: what every interrupted run must end up equal to."""
    tmp = tmp_path_factory.mktemp("clean")
    done = subprocess.run(curate_cmd(one_sample_per_shard(tmp, sample_dir, tmp / "out")), cwd=REPO, check=True,
                          capture_output=True, text=True)
    return tmp / "out", done.stderr


def samples_of(out) -> dict[str, dict[str, bytes]]:
    """key -> members (image and record bytes) over every shard; a key written twice fails here."""
    found: dict[str, dict[str, bytes]] = {}
    for shard in OutputLayout.at(out).shard_files():
        for key, members in shard_samples(shard):
            assert key not in found, f"{key} was written twice"
            found[key] = members
    return found


def assert_same_samples(clean: Path, resumed) -> None:
    """The same keys, each once, with byte-identical images and equal records."""
    mine, theirs = samples_of(resumed), samples_of(clean)
    assert sorted(mine) == sorted(theirs)
    for key, members in mine.items():
        assert json.loads(members.pop("json")) == json.loads(theirs[key]["json"])
        assert members == {ext: data for ext, data in theirs[key].items() if ext != "json"}


def run_and_kill_after_parts(pipeline: Path | list[str], out, n_parts: int, timeout: float = 240,
                             extra_delay: float = 0.0) -> bool:
    """Start a run (of a pipeline file, or a whole command); SIGKILL its whole process group
    ``extra_delay`` seconds after ``n_parts`` parts are committed. Returns False if the run finished
    before that point."""
    command = pipeline if isinstance(pipeline, list) else curate_cmd(pipeline)
    proc = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if len(OutputLayout.at(out).part_files()) >= n_parts:
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


def test_killed_runs_resume_to_exactly_the_uninterrupted_sample_set(tmp_path, sample_dir, clean_run):
    killed_out = tmp_path / "killed"
    killed_yaml = one_sample_per_shard(tmp_path / "b", sample_dir, killed_out)

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

    assert_same_samples(clean_run[0], killed_out)
    assert not list(killed_out.rglob("*.tmp"))
    shards = {p.stem for p in (killed_out / "shards").glob("*.tar")}
    parts = {p.stem for p in (killed_out / "parts").glob("*.parquet")}
    assert shards <= parts


@pytest.mark.parametrize("seed", [3, 5])
def test_killed_runs_writing_to_s3_resume_to_the_clean_set(tmp_path, sample_dir, clean_run, s3_bucket,  # noqa: F811
                                                           seed):
    """The driver's process group SIGKILLed at seeded moments while Ray's workers upload shards and
    parts to S3; the resumed output holds the clean run's samples, each once, and no leftovers."""
    uri = f"s3://{s3_bucket}/killed"
    killed_yaml = one_sample_per_shard(tmp_path, sample_dir, uri)
    rng = random.Random(seed)
    kills = 0
    for n_parts in (1, rng.randint(2, 4)):
        kills += run_and_kill_after_parts(killed_yaml, uri, n_parts, extra_delay=rng.uniform(0.0, 1.5))
    assert kills, "no run was killed: the resume below would check nothing"
    done = subprocess.run(curate_cmd(killed_yaml), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_samples(clean_run[0], uri)
    layout = OutputLayout.at(uri)
    assert json.loads(layout.manifest.read_text())["status"] == "complete"
    committed = {p.name.split(".")[0] for p in layout.part_files()}
    assert {p.name.split(".")[0] for p in layout.shard_files()} <= committed
    assert not [p for p in layout.numbered_files() if p.name.endswith(".tmp")]


def test_ctrl_c_commits_says_how_to_resume_and_resumes_to_the_clean_set(tmp_path, sample_dir, clean_run):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does) at seeded moments after
    commits: exit 130 with one line and no traceback, a manifest that says interrupted, and a
    resume that ends with the uninterrupted run's samples."""
    # stderr is no terminal here: Ray Data's status blocks stay in its log file, off the console
    assert "logging_progress" not in clean_run[1], clean_run[1][-2000:]
    stopped_yaml = one_sample_per_shard(tmp_path / "b", sample_dir, tmp_path / "stopped")

    rng = random.Random(11)
    manifest = tmp_path / "stopped" / "manifest.json"
    interrupted = 0
    moments = (10.0, 25.0)
    for _ in range(4):
        # A seeded moment while Ray works (its rows arrive in bursts, so waiting for a commit and then
        # signalling mostly finds the run already done).
        proc = subprocess.Popen(curate_cmd(stopped_yaml), cwd=REPO, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(*moments))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # the run finished before the signal (a quiet machine): try earlier
            moments = (moments[0] / 2, moments[0])
            continue
        assert proc.returncode == 130, err[-3000:]
        assert "Traceback" not in err, err[-4000:]
        assert "run the same command again to resume" in " ".join(err.split()), err[-4000:]
        # An interrupt before the first commit gives the new output back; after it, the manifest says so.
        assert not manifest.exists() or '"status": "interrupted"' in manifest.read_text()
        interrupted += 1
        if interrupted == 2:
            break
    assert interrupted, "no run was interrupted: the check above never ran"
    done = subprocess.run(curate_cmd(stopped_yaml), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_samples(clean_run[0], tmp_path / "stopped")


@pytest.fixture(scope="module")
def vqa_source(tmp_path_factory) -> Path:
    from curate.samples import generate_vqa_samples

    return generate_vqa_samples(tmp_path_factory.mktemp("vqa"), count=6)


def canvas_cmd(vqa: Path, out) -> list[str]:
    """``curate augment canvas`` with a commit after every canvas: many commit points to kill between."""
    return [sys.executable, "-m", "curate.cli", "augment", "canvas", str(REPO / "pipelines" / "canvas.yaml"),
            "-o", str(out), "--set", f"source.path={vqa / 'llava.json'}", "--set", f"source.images={vqa / 'images'}",
            "--set", "output.shard_max_samples=1", "--set", "ray.progress=false"]


def test_killed_canvas_runs_writing_to_s3_resume_to_the_clean_set(tmp_path, vqa_source, s3_bucket):  # noqa: F811
    """The canvas goes through the same runner and committer as the corpus: a SIGKILLed
    ``curate augment canvas`` (driver and workers) writing to S3 resumes to the clean local run's
    canvases, each once (local disk's resume is the Ctrl-C test's, tests/augment)."""
    clean = tmp_path / "clean"
    subprocess.run(canvas_cmd(vqa_source, clean), cwd=REPO, check=True, capture_output=True)
    out = f"s3://{s3_bucket}/canvas"
    rng = random.Random(13)
    kills = 0
    for n_parts in (1, rng.randint(2, 4)):
        kills += run_and_kill_after_parts(canvas_cmd(vqa_source, out), out, n_parts, extra_delay=rng.uniform(0, 1.0))
    assert kills, "no run was killed: the resume below would check nothing"
    done = subprocess.run(canvas_cmd(vqa_source, out), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipped as done: 0" not in done.stdout  # the resume found commits to keep
    assert_same_samples(clean, out)
    layout = OutputLayout.at(out)
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["status"] == "complete" and manifest["counts"] == {"read": 6, "written": 6, "quarantined": 0}
    assert {p.name.split(".")[0] for p in layout.shard_files()} <= {p.name.split(".")[0] for p in layout.part_files()}
