"""Cases 3, 4, 5, 12, 13: a resume trusts only what it can verify, and accounts for every input the
same way a clean run does."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.io.corpus import CorpusWriter, OutputConflict
from tests.io.test_corpus import ok_row
from tests.safety.conftest import image_files, load, manifest, parts_rows


def written_output(tmp_path, n=6):
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "out")
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(n):
        writer.add(ok_row(i))
    writer.finish()
    return cfg, tmp_path / "out"


def resume_and_redo(cfg, n=6):
    """Resume: the writer says which inputs are done; the others are fed again, as the run would."""
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(n):
        if f"/in/{i}.png" not in writer.done_uris:
            writer.add(ok_row(i))
    writer.finish()
    return writer


def assert_every_input_once(out, n=6):
    rows = parts_rows(out)
    assert sorted(r["uri"] for r in rows) == [f"/in/{i}.png" for i in range(n)]
    index = pq.read_table(out / "index.parquet").to_pylist()
    assert len(index) == n
    for row in index:  # every index row points at a shard that exists and holds its bytes
        with open(out / "shards" / row["shard"], "rb") as f:
            f.seek(row["image_offset"])
            assert f.read(row["image_size"]) == b"png-bytes-%d" % int(row["uri"][4:-4])


def test_case3_a_deleted_committed_shard_is_redone_not_trusted(tmp_path):
    cfg, out = written_output(tmp_path)
    (out / "shards" / "train-000001.tar").unlink()
    writer = resume_and_redo(cfg)
    assert any("train-000001 dropped: shards/train-000001.tar is missing" in n for n in writer.notes)
    assert manifest(out)["status"] == "complete" and manifest(out)["counts"]["written"] == 6
    assert_every_input_once(out)


def test_case3_a_shard_of_another_size_is_redone_and_verify_checks_hashes(tmp_path):
    cfg, out = written_output(tmp_path)
    with open(out / "shards" / "train-000000.tar", "ab") as f:
        f.write(b"\0" * 512)
    shard = out / "shards" / "train-000002.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size, other bytes: only a hash check sees it
    shard.write_bytes(bytes(data))
    writer = CorpusWriter(cfg.output.path, cfg).open()
    assert [n.split(":")[0] for n in writer.notes] == ["commit train-000000 dropped"]
    writer.abort()
    writer = CorpusWriter(cfg.output.path, cfg, verify=True).open()
    assert any("train-000002 dropped: shards/train-000002.tar does not match its recorded sha256" in n
               for n in writer.notes)
    writer.abort()
    resume_and_redo(cfg)
    assert_every_input_once(out)


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "bit-flipped", "empty"])
def test_case4_a_damaged_part_is_dropped_with_a_warning_and_its_inputs_redone(tmp_path, damage):
    cfg, out = written_output(tmp_path)
    part = out / "parts" / "train-000001.parquet"
    data = bytearray(part.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "zeroed":
        data = bytearray(len(data))
    elif damage == "bit-flipped":  # inside a stored URI: the rows would read back wrong
        data[bytes(data).index(b"/in/") + 4] ^= 0x01
    else:
        data = bytearray()
    part.write_bytes(bytes(data))
    writer = resume_and_redo(cfg)
    assert any(n.startswith("commit train-000001 dropped") for n in writer.notes), writer.notes
    assert (out / ".curate" / "dropped").exists()
    assert_every_input_once(out)


def test_case4_every_single_byte_flip_of_a_part_is_caught_or_harmless(tmp_path):
    cfg, out = written_output(tmp_path, n=2)
    part = out / "parts" / "train-000000.parquet"
    good = part.read_bytes()
    expected = pq.read_table(part).to_pylist()
    writer = CorpusWriter(cfg.output.path, cfg)
    for pos in range(0, len(good), 7):
        data = bytearray(good)
        data[pos] ^= 0x04
        part.write_bytes(bytes(data))
        problem, table, _ = writer.committer._check_part(part)
        assert problem is not None or table.to_pylist() == expected, f"byte {pos}: changed rows accepted"


def test_case5_a_null_uri_in_a_parquet_list_is_quarantined_and_resume_works(tmp_path, no_ray):
    images = image_files(tmp_path / "in", 2)
    listing = tmp_path / "list.parquet"
    pq.write_table(pa.table({"uri": [str(images[0]), None, str(images[1]), ""]}), listing)
    cfg = load(tmp_path, [{"type": "list", "path": str(listing)}], tmp_path / "out")
    result = no_ray(cfg)
    assert (result.read, result.written, result.quarantined) == (4, 2, 2)
    reasons = {q["detail"] for q in manifest(tmp_path / "out")["quarantine"]}
    assert reasons == {"row=1: uri is empty", "row=3: uri is empty"}
    again = no_ray(cfg)  # a resume finds everything done
    assert (again.read, again.skipped_done) == (4, 4)


def test_case12_config_changed_after_the_manifest_was_deleted_is_refused(tmp_path):
    cfg, out = written_output(tmp_path)
    (out / "manifest.json").unlink()
    changed = cfg.model_copy(deep=True)
    changed.select.max_boxes = 7
    with pytest.raises(OutputConflict, match="another --output"):
        CorpusWriter(changed.output.path, changed).open()
    # With the marker gone as well, the parts still carry the config they were written with.
    (out / ".curate" / "output.json").unlink()
    shutil.copy(out / "index.parquet", tmp_path / "keep.parquet")
    (out / "index.parquet").unlink()
    with pytest.raises(Exception, match="not written by curate|another --output"):
        CorpusWriter(changed.output.path, changed).open()


def test_case12_the_parts_decide_even_when_the_marker_agrees(tmp_path):
    cfg, out = written_output(tmp_path)
    changed = cfg.model_copy(deep=True)
    changed.select.max_boxes = 7
    from curate.io.ownership import write_marker

    write_marker(CorpusWriter(cfg.output.path, cfg).layout, "corpus", changed.sha256())  # a forged marker
    with pytest.raises(OutputConflict, match="train-000000.parquet: written by config"):
        CorpusWriter(changed.output.path, changed).open()


def test_case12_a_truncated_manifest_is_rebuilt_from_the_parts(tmp_path):
    cfg, out = written_output(tmp_path)
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 2])
    resume_and_redo(cfg)
    m = manifest(out)
    assert m["status"] == "complete" and m["counts"] == {"read": 6, "written": 6, "quarantined": 0,
                                                         "regions": 6, "captioned_regions": 0}


def test_case13_an_input_listed_twice_is_accounted_the_same_after_a_kill(tmp_path, no_ray, monkeypatch):
    images = image_files(tmp_path / "in", 3)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in [images[0], images[1], images[0], images[2], images[0]]))
    clean_cfg = load(tmp_path, [{"type": "list", "path": str(listing)}], tmp_path / "clean", shard_max_samples=1)
    no_ray(clean_cfg)
    clean = manifest(tmp_path / "clean")

    import curate.pipeline
    from tests.safety.conftest import ingest_only

    def killed_after_three(cfg, run, chunks, on_listed, on_status=None):  # one row per commit (shard_max_samples=1)
        for i, rows in enumerate(ingest_only(cfg, run, chunks, on_listed)):
            if i == 3:
                raise KeyboardInterrupt
            yield rows

    cfg = load(tmp_path, [{"type": "list", "path": str(listing)}], tmp_path / "killed", shard_max_samples=1)
    monkeypatch.setattr(curate.pipeline, "_process", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        curate.pipeline.run_pipeline(cfg)
    monkeypatch.setattr(curate.pipeline, "_process", ingest_only)
    committed = len(parts_rows(tmp_path / "killed"))  # the fourth commit landed before the kill reached the driver
    resumed = curate.pipeline.run_pipeline(cfg)
    assert resumed.skipped_done == committed == 4
    m = manifest(tmp_path / "killed")
    assert m["counts"] == clean["counts"] == {"read": 5, "written": 3, "quarantined": 2, "regions": 0,
                                              "captioned_regions": 0}
    assert sorted((q["uri"], q["reason"]) for q in m["quarantine"]) == \
        sorted((q["uri"], q["reason"]) for q in clean["quarantine"])
