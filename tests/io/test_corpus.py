"""Commit protocol and resume, driven directly (the subprocess SIGKILL test is in tests/e2e)."""

import json

import pytest
import yaml

from curate.config import load_config
from curate.io.corpus import CorpusWriter, OutputConflict
from curate.io.index import read_parts
from curate.rows import new_row, quarantine


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "sources": [{"type": "dir", "path": "x"}],
        "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
        "output": {"path": str(tmp_path / "out"), "shard_max_samples": 2},
    }))
    return load_config(path)


def ok_row(i: int, key: str | None = None) -> dict:
    row = new_row(f"/in/{i}.png", "d")
    key = key or f"{i:020x}"
    row.update(status="ok", key=key, sha256=key + "0" * 44, kind="natural", image=b"png-bytes-%d" % i,
               image_ext="png", width=100, height=80, regions=json.dumps([
                   {"box": [0, 0, 10, 10], "box_norm": [0, 0, 0.1, 0.125], "score": 1.0, "n_masks": 3,
                    "mask_area_frac": 0.5}]))
    return row


def test_commits_every_n_samples_and_counts_add_up(cfg):
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(5):
        writer.add(ok_row(i))
    writer.add(quarantine(new_row("/in/bad.png", "d"), "truncated", "cut short"))
    writer.finish()
    layout = writer.layout
    assert [p.name for p in layout.shard_files()] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert len(layout.part_files()) == 3
    m = json.loads(layout.manifest.read_text())
    assert m["status"] == "complete"
    assert m["counts"]["read"] == 6 == m["counts"]["written"] + m["counts"]["quarantined"]
    assert m["quarantine"] == [{"uri": "/in/bad.png", "reason": "truncated", "detail": "cut short"}]


def test_duplicate_content_is_quarantined_not_written_twice(cfg):
    writer = CorpusWriter(cfg.output.path, cfg).open()
    writer.add(ok_row(1, key="a" * 20))
    writer.add(ok_row(2, key="a" * 20))
    writer.finish()
    rows = read_parts(writer.layout).to_pylist()
    assert [r["status"] for r in rows] == ["written", "quarantined"]
    assert rows[1]["reason"] == "duplicate" and "/in/1.png" in rows[1]["detail"]


def test_resume_discards_uncommitted_work_and_skips_committed_inputs(cfg):
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(3):  # commits shard 0 (two samples), shard 1 stays open
        writer.add(ok_row(i))
    layout = writer.layout
    # Simulate a kill after shard 1's tar was renamed but before its part landed (its part's temp
    # file half written), plus a temp file that no run of ours journalled.
    writer._session.shard.close()
    (layout.parts_dir / "train-000001.parquet.tmp").write_bytes(b"partial")
    (layout.shards_dir / "train-000002.tar.tmp").write_bytes(b"not ours")
    writer.committer.lock.abandon()
    del writer

    resumed = CorpusWriter(cfg.output.path, cfg).open()
    assert resumed.done_uris == {"/in/0.png", "/in/1.png"}
    assert [p.name for p in layout.shard_files()] == ["train-000000.tar"]
    assert not list(layout.parts_dir.glob("*.tmp"))
    # Only journalled names are cleaned up; the stranger is left alone and its number skipped.
    assert [p.name for p in layout.shards_dir.glob("*.tmp")] == ["train-000002.tar.tmp"]
    assert resumed.committer.next_number == 3
    for i in range(2, 5):
        resumed.add(ok_row(i))
    resumed.finish()
    rows = read_parts(layout).to_pylist()
    assert sorted(r["uri"] for r in rows) == [f"/in/{i}.png" for i in range(5)]


def test_output_of_another_config_is_refused(cfg, tmp_path):
    CorpusWriter(cfg.output.path, cfg).open().finish()
    other = cfg.model_copy(update={"select": cfg.select.model_copy(update={"max_boxes": 2})})
    with pytest.raises(OutputConflict, match="another --output"):
        CorpusWriter(cfg.output.path, other).open()


def test_questions_are_written_as_their_own_shards(tmp_path):
    """Question shards commit with their region shard and reference the image by key."""
    import tarfile

    from curate.records import QuestionRecord

    rows = write_question_corpus(tmp_path)
    files = sorted((tmp_path / "questions").glob("*.tar"))
    assert [f.name for f in files] == ["train-000000.tar", "train-000001.tar"]
    found = []
    for f in files:
        with tarfile.open(f) as tar:
            found += [QuestionRecord.model_validate_json(tar.extractfile(m).read()) for m in tar.getmembers()]
    assert [q.key for q in found] == [f"{rows[i]['key']}_1" for i in range(3)]
    assert found[0].image_shard == "train-000000.tar" and found[2].image_shard == "train-000001.tar"
    assert found[1].question == "Which bus number is shown on the front sign?"
    assert found[1].caption == "A bus with the number 42 on its sign."


def write_question_corpus(out, n: int = 3) -> list[dict]:
    """A corpus of ``n`` images, 2 per shard, each with one retargeted question; returns the rows."""
    from curate.config import PipelineConfig
    from curate.io.corpus import CorpusWriter

    cfg = PipelineConfig.model_validate({
        "name": "q", "sources": [{"type": "dir", "path": "x"}],
        "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
        "output": {"path": str(out), "shard_max_samples": 2}})
    writer = CorpusWriter(out, cfg).open()
    rows = [_question_row(i) for i in range(n)]
    for row in rows:
        writer.add(dict(row))
    writer.finish()
    return rows


def _question_row(i: int) -> dict:
    import hashlib
    import json

    from curate.rows import new_row
    from tests.conftest import noise_image, png_bytes

    image = png_bytes(noise_image(64, 48, seed=i))
    sha = hashlib.sha256(image).hexdigest()
    row = new_row(f"img{i}.png", "d")
    regions = [
        {"box": [0, 0, 10, 10], "box_norm": [0, 0, 0.1, 0.2], "score": 1.0, "n_masks": 3, "mask_area_frac": 0.2},
        {"box": [5, 5, 30, 30], "box_norm": [0.1, 0.1, 0.5, 0.6], "score": 0.5, "n_masks": 4, "mask_area_frac": 0.3,
         "caption": "A bus with the number 42 on its sign.", "caption_source": "mllm", "caption_model": "m",
         "question": "Which bus number is shown on the front sign?", "question_model": "hf:llm"},
    ]
    row.update(status="ok", key=sha[:20], sha256=sha, kind="natural", image=image, image_ext="png", width=64,
               height=48, regions=json.dumps(regions))
    return row
