"""Ctrl-C and SIGTERM: held inside a shard write or commit, then the complete samples are committed,
the manifest says ``interrupted``, and the same command resumes to the clean run's sample set."""

from __future__ import annotations

import json
import os
import signal

import pytest

from curate.io import interrupt
from tests.safety.conftest import image_files, ingest_only, load, manifest, no_ray, parts_rows  # noqa: F401


@pytest.fixture
def handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    interrupt.install()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_critical_section_waits_for_its_end(handlers, sig):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt.critical():
            with interrupt.critical():
                os.kill(os.getpid(), sig)
                reached.append("inner end")
            reached.append("outer end")
    assert reached == ["inner end", "outer end"]
    with pytest.raises(KeyboardInterrupt):  # outside a section it stops at once
        os.kill(os.getpid(), sig)


def test_an_interrupted_run_commits_its_complete_samples_and_resumes(tmp_path, no_ray, monkeypatch):  # noqa: F811
    import curate.pipeline

    images = image_files(tmp_path / "in", 7)
    clean_cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "clean",
                     shard_max_samples=3)
    no_ray(clean_cfg)

    def stopped_after_four(cfg, run, chunks, on_listed, on_status=None):  # commits of 3, 3 and 1 rows
        for i, rows in enumerate(ingest_only(cfg, run, chunks, on_listed)):
            if i == 1:
                os.kill(os.getpid(), signal.SIGINT)  # arrives while the second commit's rows come back
            yield rows

    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "run", shard_max_samples=3)
    saved = signal.getsignal(signal.SIGINT)
    try:
        interrupt.install()
        monkeypatch.setattr(curate.pipeline, "_process", stopped_after_four)
        with pytest.raises(KeyboardInterrupt):
            curate.pipeline.run_pipeline(cfg)
    finally:
        signal.signal(signal.SIGINT, saved)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    m = manifest(tmp_path / "run")
    # The second commit landed before the signal, though the driver had not counted it yet.
    assert m["status"] == "interrupted" and m["counts"]["written"] == len(parts_rows(tmp_path / "run")) == 6
    assert not list((tmp_path / "run").rglob("*.tmp"))
    monkeypatch.setattr(curate.pipeline, "_process", ingest_only)
    again = curate.pipeline.run_pipeline(cfg)
    assert again.skipped_done == 6 and again.written == len(images) == 7
    assert sorted(r["key"] for r in parts_rows(tmp_path / "run")) == \
        sorted(r["key"] for r in parts_rows(tmp_path / "clean"))


def test_shards_close_on_time(tmp_path, monkeypatch):
    import curate.io.corpus as corpus
    from curate.io.corpus import CorpusWriter
    from tests.io.test_corpus import ok_row

    clock = [1000.0]
    monkeypatch.setattr(corpus.time, "monotonic", lambda: clock[0])
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "out",
               shard_max_samples=100, shard_max_seconds=60)
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(3):
        writer.add(ok_row(i))
        clock[0] += 25  # 0, 25, 50 s: the third sample is past no limit yet
    assert len(list((tmp_path / "out" / "parts").glob("*.parquet"))) == 0
    writer.add(ok_row(3))  # 75 s after the shard opened: it commits
    assert len(list((tmp_path / "out" / "parts").glob("*.parquet"))) == 1
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["written"] == 4
    writer.finish()
