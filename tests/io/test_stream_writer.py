"""Stream writers (output.writers: stream): a shard stays open across batches and closes on samples,
bytes or time; a batch that Ray retried is not written twice; flush commits what is open."""

from __future__ import annotations

import itertools
import time

import pytest

from curate.io.corpus import BlockSink, CorpusRun
from curate.io.index import read_parts
from curate.io.ledger import Ledger
from curate.io.sources import listed_batches
from curate.io.writing import StreamWriter
from curate.runner import skip_committed
from curate.stages.ingest import IngestStage
from tests.safety.conftest import image_files, load


@pytest.fixture
def setup(tmp_path):
    def make(n: int, **output):
        image_files(tmp_path / "in", n)
        cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "out", **output)
        run = CorpusRun(cfg.output.path, cfg).open()
        ledger = Ledger()
        numbers = itertools.count()
        writer = StreamWriter(BlockSink(run.target, cfg, lambda: next(numbers), ledger))
        stage = IngestStage(cfg)
        rows = [stage.process([r])[0] for t in listed_batches(cfg.sources)
                for r in skip_committed(t, ledger).to_pylist()]
        return run, writer, rows
    return make


def committed_sizes(run) -> list[int]:
    parts = read_parts(run.layout).to_pylist()
    return sorted(sum(1 for r in parts if r["shard"] == shard) for shard in {r["shard"] for r in parts})


def test_a_shard_fills_across_batches(setup):
    run, writer, rows = setup(8, shard_max_samples=3)
    returned = []
    for start in range(0, 8, 2):  # batches of 2: the blocks mode would make shards of 2
        returned += writer.add(rows[start:start + 2])
    assert len(returned) == 6  # two full shards committed on the way
    returned += writer.flush()
    assert len(returned) == 8 and committed_sizes(run) == [2, 3, 3]
    run.finish()


def test_a_retried_batch_is_not_written_twice(setup):
    run, writer, rows = setup(4, shard_max_samples=10)
    writer.add(rows[:2])
    assert writer.add(rows[:2]) == []  # the same batch again: Ray retried the call that brought it
    writer.add(rows[2:])
    assert sorted(r["uri"] for r in writer.flush()) == sorted(r["uri"] for r in rows)
    run.finish()


def test_a_shard_closes_on_time_when_rows_come_slowly(setup):
    run, writer, rows = setup(3, shard_max_samples=100, shard_max_seconds=0.2)
    assert writer.add(rows[:1]) == []
    time.sleep(0.3)
    assert len(writer.add(rows[1:2])) == 2  # due by time at the next row: both commit
    assert writer.add(rows[2:]) == [] and len(writer.flush()) == 1
    run.finish()


def test_a_failed_batch_drops_the_open_shard_and_can_be_retried(setup, monkeypatch):
    run, writer, rows = setup(4, shard_max_samples=10)
    writer.add(rows[:2])
    broken = [dict(rows[2], image=None), rows[3]]  # an ok row without its bytes cannot be written
    with pytest.raises(TypeError):
        writer.add(broken)
    assert writer.session.pending == []  # the open shard went: its rows were never committed
    assert len(writer.add(rows[2:])) == 0 and len(writer.flush()) == 2  # the retry is taken
    run.finish()
