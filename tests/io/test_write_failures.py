"""Unwritable outputs and full disks: a clear error, no partial shard, committed work kept."""

from __future__ import annotations

import errno
import json

import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.io.corpus import CorpusWriter
from curate.io.shards import ShardWriter
from tests.io.test_corpus import ok_row


def config(tmp_path, out):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "sources": [{"type": "dir", "path": str(tmp_path / "in")}],
        "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
        "output": {"path": str(out), "shard_max_samples": 2}, "ray": {"progress": False},
    }))
    return path


def test_output_under_a_file_is_a_clear_cli_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["run", str(config(tmp_path, blocker / "out"))])
    assert result.exit_code == 2
    assert "cannot write the output" in result.output and "not-a-dir" in result.output


def test_full_disk_mid_shard_leaves_no_partial_shard_and_keeps_committed_ones(tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = load_config(config(tmp_path, out))
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(2):  # one committed shard
        writer.add(ok_row(i))
    real_add = ShardWriter.add

    def add_until_full(self, key, members):
        if key.endswith("3"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add(self, key, members)

    monkeypatch.setattr(ShardWriter, "add", add_until_full)
    with pytest.raises(OSError, match="No space"):
        try:
            for i in range(2, 5):
                writer.add(ok_row(i))
        except OSError:
            writer.abort()
            raise
    assert not list(out.rglob("*.tmp"))
    assert [p.name for p in (out / "shards").iterdir()] == ["train-000000.tar"]
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 2
    monkeypatch.setattr(ShardWriter, "add", real_add)
    resumed = CorpusWriter(cfg.output.path, cfg).open()
    assert resumed.done_uris == {"/in/0.png", "/in/1.png"}
