"""Cases 6, 7, 8, 14, 15: every source kind quarantines bad entries instead of aborting or hanging."""

from __future__ import annotations

import hashlib
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.config import IngestConfig, SourceConfig
from curate.io.sources import SourceError, list_inputs
from curate.ops.decode import ingest_row
from tests.conftest import noise_image, png_bytes
from tests.safety.conftest import image_files, load, write_tar


def listed(**source) -> list[dict]:
    return list(list_inputs([SourceConfig(**source)]))


def finishes(fn, seconds: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) when it does not return."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except Exception as e:  # re-raised in the test's thread
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_case6_a_file_uri_to_a_fifo_is_quarantined_not_read(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    listing = tmp_path / "list.txt"
    listing.write_text(f"file://{fifo}\n")
    (row,) = listed(type="list", path=str(listing))
    row = finishes(lambda: ingest_row(row, IngestConfig()))
    assert row["status"] == "quarantined" and row["reason"] == "unreadable"
    assert "not a regular file" in row["detail"]


def test_case6_a_read_that_hangs_times_out(tmp_path, monkeypatch):
    import curate.io.fs as fs

    release = threading.Event()
    monkeypatch.setattr(fs, "resolve", lambda uri: release.wait(30) and None)  # a stalled mount
    row = listed(type="glob", path=str(image_files(tmp_path / "in", 1)[0]))[0]
    try:
        row = finishes(lambda: ingest_row(row, IngestConfig(read_timeout_s=0.2)))
    finally:
        release.set()
    assert row["reason"] == "unreadable" and "no answer within 0.2 s" in row["detail"]


def test_case7_a_truncated_tar_keeps_its_whole_members_and_quarantines_the_rest(tmp_path):
    members = {f"k{i}.png": png_bytes(noise_image(300, 260, seed=i)) for i in range(3)}
    good = write_tar(tmp_path / "shards" / "a.tar", members)
    cut = tmp_path / "shards" / "b.tar"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "shards" / "c.tar").write_bytes(b"this is not a tar archive" * 40)
    rows = listed(type="webdataset", path=str(tmp_path / "shards" / "*.tar"))
    bad = [r for r in rows if r["status"] == "quarantined"]
    assert [os.path.basename(r["uri"]) for r in bad] == ["b.tar", "c.tar"]
    assert all(r["reason"] == "unreadable" and "not a readable tar shard" in r["detail"] for r in bad)
    outcomes = [ingest_row(r, IngestConfig())["status"] for r in rows if r["status"] != "quarantined"]
    assert outcomes.count("ok") >= 3 + 1  # all of a.tar, and b.tar's members that lie wholly before the cut


def test_case7_a_run_over_a_damaged_tar_completes_with_counts_that_add_up(tmp_path, no_ray):
    write_tar(tmp_path / "shards" / "a.tar", {"k.png": png_bytes(noise_image(300, 260))})
    (tmp_path / "shards" / "b.tar").write_bytes(b"\0" * 10)
    cfg = load(tmp_path, [{"type": "webdataset", "path": str(tmp_path / "shards" / "*.tar")}], tmp_path / "out")
    result = no_ray(cfg)
    assert (result.read, result.written, result.quarantined) == (2, 1, 1)


def test_case8_malformed_text_lists_quarantine_the_bad_lines(tmp_path):
    image = image_files(tmp_path / "in", 1)[0]
    listing = tmp_path / "list.txt"
    listing.write_bytes(str(image).encode() + b"\n/in/caf\xe9.png\n# a comment\n\n" + str(image).encode())
    rows = listed(type="list", path=str(listing))
    assert [r["status"] for r in rows] == ["pending", "quarantined", "pending"]
    assert rows[1]["reason"] == "invalid_entry" and rows[1]["detail"] == "line=2: not UTF-8 text"


def test_case8_malformed_parquet_lists_quarantine_rows_or_name_the_column(tmp_path):
    image = str(image_files(tmp_path / "in", 1)[0])
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"uri": [1, 2], "caption": ["a", "b"]}), ints)
    rows = listed(type="list", path=str(ints))
    assert [r["detail"] for r in rows] == ["row=0: uri is a int, not a string", "row=1: uri is a int, not a string"]
    captions = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"uri": [image, image], "caption": [3.5, None]}), captions)
    rows = listed(type="list", path=str(captions), caption_column="caption")
    assert rows[0]["reason"] == "invalid_entry" and "caption is a float" in rows[0]["detail"]
    assert rows[1]["status"] == "pending" and rows[1]["source_caption"] is None
    with pytest.raises(SourceError, match="no column 'alt' for sources\\[\\].caption_column"):
        listed(type="list", path=str(captions), caption_column="alt")


def test_case14_a_hash_sign_in_a_folder_name_reads_the_right_tar(tmp_path):
    data = png_bytes(noise_image(300, 260, seed=9))
    folder = tmp_path / "set#2"
    write_tar(folder / "shard.tar", {"k.png": data})
    (tmp_path / "set").write_bytes(b"a different file that a split at '#' would read")
    (row,) = listed(type="webdataset", path=str(folder / "shard.tar"))
    row = ingest_row(row, IngestConfig())
    assert row["status"] == "ok" and row["sha256"] == hashlib.sha256(data).hexdigest()
    assert row["uri"] == f"{folder / 'shard.tar'}#k.png"


def test_case15_a_list_that_never_ends_is_refused_at_once(tmp_path):
    with pytest.raises(SourceError, match="not a regular file"):
        finishes(lambda: listed(type="list", path="/dev/zero"))
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="not a regular file"):
        finishes(lambda: listed(type="list", path=str(fifo)))


def test_case15_an_endless_line_costs_bounded_memory_and_is_one_bad_entry(tmp_path):
    image = image_files(tmp_path / "in", 1)[0]
    listing = tmp_path / "list.txt"
    with open(listing, "wb") as f:
        f.write(str(image).encode() + b"\n")
        f.write(b"x" * (3 << 20) + b"\n")  # a 3 MB "line", read in 1 MB blocks
        f.write(str(image).encode() + b"\n")
    rows = listed(type="list", path=str(listing))
    assert [r["status"] for r in rows] == ["pending", "quarantined", "pending"]
    assert "longer than 65536 bytes" in rows[1]["detail"]
