"""Listing batches and the blocks they are cut into for the Ray plan."""

from __future__ import annotations

import io
import itertools

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from PIL import Image

from curate.cli import _input_source
from curate.config import SourceConfig
from curate.io.sources import SourceError, block_sizes, list_inputs, list_source, rechunk, rechunk_by_group
from tests.io.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)


def test_blocks_stay_small_for_a_short_run_then_grow_to_the_largest():
    sizes = list(itertools.islice(block_sizes(16, small_blocks=8, largest=256), 8 + 64 * 6))
    assert sizes[:8] == [16] * 8
    assert sizes[8:64] == [16] * 56  # growth starts at a multiple of 64 blocks
    assert sizes[64] == 32 and sizes[128] == 64 and max(sizes) == 256
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("lengths", [[4096, 4096, 100], [1, 2, 3, 50, 0, 7], [0], [5000]])
def test_rechunk_keeps_every_row_once_in_order_at_the_sizes_asked(lengths):
    start = list(itertools.accumulate([0] + lengths))
    tables = [pa.table({"ordinal": pa.array(range(a, b), pa.int64())}) for a, b in zip(start, start[1:])]
    blocks = list(rechunk(tables, block_sizes(16, small_blocks=4, largest=64)))
    assert [r for b in blocks for r in b["ordinal"].to_pylist()] == list(range(sum(lengths)))
    expected = list(itertools.islice(block_sizes(16, small_blocks=4, largest=64), len(blocks)))
    assert [b.num_rows for b in blocks[:-1]] == expected[:-1]
    assert not blocks or 0 < blocks[-1].num_rows <= expected[-1]


def grouped_listing(group_rows: list[int], batch: int) -> list[pa.Table]:
    """A listing in batches of ``batch`` rows whose rows come from groups of the given sizes."""
    groups = [g for g, n in enumerate(group_rows) for _ in range(n)]
    table = pa.table({"ordinal": pa.array(range(len(groups)), pa.int64()), "group": groups})
    return [table.slice(i, batch) for i in range(0, table.num_rows, batch)]


@pytest.mark.parametrize("group_rows", [[100] * 30, [40] * 300, [20, 700, 5, 5, 100, 64], [1000], [63, 64, 65, 1]])
@pytest.mark.parametrize("batch", [7, 1024])
def test_grouped_blocks_keep_every_row_once_and_small_groups_whole(group_rows, batch):
    listing = grouped_listing(group_rows, batch)
    blocks = list(rechunk_by_group(listing, lambda t: t["group"].to_pylist(), block_sizes(128, small_blocks=4,
                                                                                           largest=512)))
    assert [r for b in blocks for r in b["ordinal"].to_pylist()] == list(range(sum(group_rows)))
    holding = {}
    for i, block in enumerate(blocks):
        for group in set(block["group"].to_pylist()):
            holding.setdefault(group, set()).add(i)
    for group, rows in enumerate(group_rows):
        if rows <= 64:  # half the first blocks' size: never cut
            assert len(holding[group]) == 1, (group, rows, holding[group])
    assert all(b.num_rows <= 512 for b in blocks)
    if group_rows == [100] * 30:  # 100-row groups (HF datasets' images): one group per block
        assert [b.num_rows for b in blocks] == [100] * 30


def test_sources_are_listed_in_turn_each_in_name_order(tmp_path):
    folders = {"pages": ["a.png", "b.png", "c.png"], "photos": ["x.jpg"], "scans": ["m.png", "n.png"]}
    for folder, names in folders.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"not read by the listing")
    sources = [SourceConfig(type="dir", path=str(tmp_path / folder)) for folder in folders]
    listed = [row["uri"].split("/")[-2:] for row in list_inputs(sources)]
    assert listed == [["pages", "a.png"], ["photos", "x.jpg"], ["scans", "m.png"],
                      ["pages", "b.png"], ["scans", "n.png"], ["pages", "c.png"]]
    assert [row["uri"] for row in list_inputs(sources)] == [row["uri"] for row in list_inputs(sources)]


def put_png(uri: str) -> None:
    filesystem, path = pafs.FileSystem.from_uri(uri)
    data = io.BytesIO()
    Image.new("RGB", (8, 8)).save(data, "PNG")
    with filesystem.open_output_stream(path) as sink:
        sink.write(data.getvalue())


def listed(path: str) -> list[str]:
    kind, path = _input_source(path)  # as `curate run -i PATH` reads it
    return [row["uri"] for row in list_source(SourceConfig(type=kind, path=path))]


def test_inputs_on_object_storage_a_prefix_or_one_object(s3_bucket):  # noqa: F811
    root = f"s3://{s3_bucket}/photos"
    for name in ("a.png", "sub/b.png", "notes.txt"):
        put_png(f"{root}/{name}")
    assert listed(root) == [f"{root}/a.png", f"{root}/sub/b.png"]
    assert listed(f"{root}/a.png") == [f"{root}/a.png"]  # one object, as a local file is taken


def test_an_input_prefix_on_object_storage_with_nothing_under_it_is_named(s3_bucket):  # noqa: F811
    with pytest.raises(SourceError, match=f"s3://{s3_bucket}/nothing: no such object or prefix"):
        listed(f"s3://{s3_bucket}/nothing")
    with pytest.raises(SourceError, match="s3://no-such-bucket-here/photos: "):
        listed("s3://no-such-bucket-here/photos")


def test_a_lists_relative_entries_are_read_from_the_lists_folder(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "imgs").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere.png"
    (folder / "list.txt").write_text(f"imgs/a.png\n./imgs/b.png\n{elsewhere}\ns3://bucket/c.png\n")
    pa.parquet.write_table(pa.table({"image": ["imgs/a.png", str(elsewhere)]}), folder / "list.parquet")
    monkeypatch.chdir(tmp_path)  # the list named from another folder, as `-i data/list.txt`
    assert listed("data/list.txt") == ["data/imgs/a.png", "data/imgs/b.png", str(elsewhere), "s3://bucket/c.png"]
    parquet = SourceConfig(type="list", path="data/list.parquet", column="image")
    assert [row["uri"] for row in list_source(parquet)] == ["data/imgs/a.png", str(elsewhere)]
    monkeypatch.chdir(folder)  # named from its own folder: the entries as written (as earlier versions listed them)
    assert listed("list.txt")[:2] == ["imgs/a.png", "./imgs/b.png"]


def test_a_list_on_object_storage_names_its_relative_entries_beside_it(s3_bucket):  # noqa: F811
    filesystem, path = pafs.FileSystem.from_uri(f"s3://{s3_bucket}/lists/train.txt")
    with filesystem.open_output_stream(path) as sink:
        sink.write(b"../photos/a.png\n")
    assert listed(f"s3://{s3_bucket}/lists/train.txt") == [f"s3://{s3_bucket}/photos/a.png"]


def test_an_input_that_is_a_file_of_another_kind_says_what_inputs_are(tmp_path):
    (tmp_path / "photos.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(SourceError, match=r"photos.zip: not an image, a folder, a list \(.txt, .parquet\) or "
                                          r"tar shards; unpack an archive first"):
        listed(str(tmp_path / "photos.zip"))
    with pytest.raises(SourceError, match=r"nowhere: does not exist \(no file or folder there\)"):
        listed(str(tmp_path / "nowhere"))


def test_an_input_under_the_home_folder_is_taken_by_its_kind(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    put = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(put)
    assert listed("~/photo.png") == [str(put)]  # one image file, not a folder


def test_a_folder_of_phone_photos_lists_every_image_and_names_what_it_cannot_read(tmp_path):
    """HEIC, AVIF and .jfif photos are inputs; PDFs, raw and JPEG XL files are quarantined with what to
    do, never left out unsaid; a file that names no image format is not listed."""
    names = ["IMG_0001.HEIC", "b.avif", "c.jfif", "d.jpe", "e.heif", "scan.pdf", "f.jxl", "g.DNG", "notes.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"not read by the listing")
    rows = {row["uri"].rsplit("/", 1)[1]: row for row in list_source(SourceConfig(type="dir", path=str(tmp_path)))}
    assert sorted(rows) == sorted(names[:-1])
    assert [name for name, row in rows.items() if row["status"] != "quarantined"] == [
        "IMG_0001.HEIC", "b.avif", "c.jfif", "d.jpe", "e.heif"]
    assert {name: row["reason"] for name, row in rows.items() if row["status"] == "quarantined"} == {
        "f.jxl": "unsupported_format", "g.DNG": "unsupported_format", "scan.pdf": "unsupported_format"}
    assert "render its pages to images" in rows["scan.pdf"]["detail"]
    assert "camera raw" in rows["g.DNG"]["detail"] and "JPEG XL" in rows["f.jxl"]["detail"]


def test_one_input_file_of_a_format_curate_does_not_read_says_what_to_do(tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.7")
    with pytest.raises(SourceError, match=r"report.pdf: PDF documents are not read: render its pages to images"):
        listed(str(tmp_path / "report.pdf"))
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.avif")
    assert listed(str(tmp_path / "photo.avif")) == [str(tmp_path / "photo.avif")]


@pytest.mark.parametrize("images", ["structs", "bytes"])
def test_a_table_whose_column_holds_images_not_paths_says_so(tmp_path, images):
    """An HF dataset's parquet (images inline as {bytes, path} structs) given as a list: every row was
    quarantined as 'uri is a dict, not a string'."""
    data = io.BytesIO()
    Image.new("RGB", (8, 8)).save(data, "PNG")
    column = [{"bytes": data.getvalue(), "path": None}] if images == "structs" else [data.getvalue()]
    pa.parquet.write_table(pa.table({"image": column}), tmp_path / "train.parquet")
    source = SourceConfig(type="list", path=str(tmp_path / "train.parquet"), column="image")
    with pytest.raises(SourceError, match=r"train.parquet: column 'image' holds the images themselves, not their "
                                          r"paths: curate run reads image files \(write them out first"):
        list(list_source(source))


def test_a_limited_listing_is_the_first_inputs_of_the_whole_one(tmp_path):
    from curate.io.sources import listed_batches

    for name in ("c.png", "a.png", "b.png", "d.png"):
        (tmp_path / name).write_bytes(b"not read by the listing")
    sources = [SourceConfig(type="dir", path=str(tmp_path))]
    whole = [row for t in listed_batches(sources) for row in t.to_pylist()]
    first = [row for t in listed_batches(sources, limit=2) for row in t.to_pylist()]
    assert [(r["uri"], r["ordinal"]) for r in first] == [(r["uri"], r["ordinal"]) for r in whole[:2]]
    assert [r["uri"].rsplit("/", 1)[1] for r in first] == ["a.png", "b.png"]
