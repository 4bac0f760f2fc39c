"""VQA tables: the listing names rows, never carries their image bytes; the render task reads them."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.augment.config import VqaSourceConfig
from curate.augment.run import render_batch, vqa_batches, with_table_images
from curate.augment.vqa_sources import NO_IMAGE, table_images
from tests.io.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40 + seed, 30), (seed * 20 % 256, 90, 140)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tables(tmp_path):
    """The same five rows as HF Image structs, as plain bytes and as paths; row 3 has no image; row
    groups of two rows, so reads cross groups."""
    (tmp_path / "img").mkdir()
    images = [png(i) for i in range(5)]
    images[3] = None
    for i, data in enumerate(images):
        if data:
            (tmp_path / "img" / f"{i}.png").write_bytes(data)
    text = {"question": [f"What is {i}?" for i in range(5)], "answer": [str(i) for i in range(5)],
            "id": [f"q{i}" for i in range(5)]}
    layouts = {
        "structs": [None if d is None else {"bytes": d, "path": f"orig-{i}.png"} for i, d in enumerate(images)],
        "bytes": images,
        "paths": [None if d is None else f"img/{i}.png" for i, d in enumerate(images)],
    }
    paths = {}
    for name, column in layouts.items():
        paths[name] = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({**text, "image": column}), paths[name], row_group_size=2)
    return paths, images


def source(path) -> VqaSourceConfig:
    return VqaSourceConfig(format="table", path=str(path), id_column="id")


@pytest.mark.parametrize("layout", ["structs", "bytes"])
def test_a_table_holding_its_images_is_listed_without_them(tables, layout):
    paths, images = tables
    [listed] = list(vqa_batches(source(paths[layout])))
    rows = listed.to_pylist()
    assert all(r["image_bytes"] is None for r in rows)
    assert [r["table_row"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["uri"] for r in rows] == [f"{paths[layout]}#{i}" for i in range(5)]
    assert all(r["status"] == "pending" for r in rows)  # the missing image is found when it is read
    cfg = type("Cfg", (), {"source": source(paths[layout])})
    filled = with_table_images(rows, cfg)
    assert [r["image_bytes"] for r in filled if r["status"] == "pending"] == [d for d in images if d]
    assert [(r["status"], r["detail"]) for r in filled][3] == ("quarantined", NO_IMAGE)


def test_a_table_of_paths_lists_the_files_it_names(tables):
    paths, _ = tables
    [listed] = list(vqa_batches(source(paths["paths"])))
    rows = listed.to_pylist()
    assert all(r["table_row"] is None and r["image_bytes"] is None for r in rows)
    assert rows[0]["uri"] == str(paths["paths"].parent / "img" / "0.png")
    assert (rows[3]["status"], rows[3]["detail"]) == ("quarantined", NO_IMAGE)


@pytest.mark.parametrize("kept_bytes", [64 << 20, 0], ids=["groups kept", "groups streamed"])
def test_rows_are_read_from_every_row_group_they_fall_in(tables, kept_bytes, monkeypatch):
    from curate.augment import vqa_sources

    monkeypatch.setattr(vqa_sources, "GROUP_KEPT_BYTES", kept_bytes)
    vqa_sources._groups.clear()
    paths, images = tables
    got = table_images(str(paths["structs"]), "image", [4, 0, 2, 1], max_bytes=1 << 20)
    assert got == {0: images[0], 1: images[1], 2: images[2], 4: images[4]}


@pytest.mark.parametrize("kept_bytes", [64 << 20, 0], ids=["groups kept", "groups streamed"])
def test_a_table_on_object_storage_is_read_as_a_local_one(tables, kept_bytes, monkeypatch, s3_bucket):  # noqa: F811
    from curate.augment import vqa_sources
    from curate.io.objpath import ObjectPath

    monkeypatch.setattr(vqa_sources, "GROUP_KEPT_BYTES", kept_bytes)
    vqa_sources._groups.clear()
    paths, images = tables
    uri = f"s3://{s3_bucket}/vqa/structs.parquet"
    ObjectPath(uri).write_bytes(paths["structs"].read_bytes())
    assert table_images(uri, "image", [4, 3, 1], max_bytes=1 << 20) == {4: images[4], 3: None, 1: images[1]}


def test_a_struct_without_bytes_reads_the_file_its_path_names(tmp_path):
    (tmp_path / "a.png").write_bytes(png(7))
    pq.write_table(pa.table({"question": ["Q?"], "answer": ["A"], "image": [{"bytes": None, "path": "a.png"}]}),
                   tmp_path / "t.parquet")
    assert table_images(str(tmp_path / "t.parquet"), "image", [0], max_bytes=1 << 20) == {0: png(7)}


def test_the_render_task_renders_rows_whose_bytes_it_read(tables, tmp_path):
    from curate.augment.config import load_canvas_config
    from tests.conftest import REPO

    paths, _ = tables
    cfg = load_canvas_config(REPO / "pipelines" / "canvas.yaml", [
        "source.format=table", f"source.path={paths['bytes']}", "source.id_column=id",
        f"output.path={tmp_path / 'out'}", "canvas.long_side=[256,320]"])
    [listed] = list(vqa_batches(cfg.source))
    rendered = render_batch(listed, cfg).to_pylist()
    assert [r["status"] for r in rendered] == ["ok", "ok", "ok", "quarantined", "ok"]
    assert all(r["canvas"] for r in rendered if r["status"] == "ok")


def test_a_row_group_is_read_once_for_the_blocks_that_follow(tables, monkeypatch):
    from curate.augment import vqa_sources

    paths, images = tables
    vqa_sources._groups.clear()
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, g, *a, **k: reads.append(g) or original(self, g, *a, **k))
    path = str(paths["bytes"])
    assert table_images(path, "image", [0], 1 << 20) == {0: images[0]}
    assert table_images(path, "image", [1, 2], 1 << 20) == {1: images[1], 2: images[2]}  # group 0 kept
    assert table_images(path, "image", [4], 1 << 20) == {4: images[4]}
    assert reads == [0, 1, 2]
    assert table_images(path, "image", [0], 1 << 20) == {0: images[0]}  # dropped by then: read again
    assert reads == [0, 1, 2, 0]


def test_rows_of_a_huge_row_group_are_read_without_holding_the_group(tmp_path):
    """pyarrow writes up to 1Mi rows per group by default, so a table written with default settings can
    be one row group of gigabytes of images: a render task that wants a few of its rows must not hold
    them all (Arrow's own allocations in a fresh process: peak during the read, and what stays). A
    reader holds at least the page a row is in (and a dictionary page): pyarrow's writer closes pages
    between write batches, 1,024 rows by default, 64 here."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    rng = __import__("random").Random(0)
    images = [rng.randbytes(200_000) for _ in range(800)]  # 160 MB of incompressible "images"
    path = tmp_path / "one_group.parquet"
    pq.write_table(pa.table({"question": ["q"] * 800, "answer": ["a"] * 800, "image": images}), path,
                   row_group_size=1 << 20, compression="none", write_batch_size=64)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    child = (
        "import pyarrow as pa\n"
        "from curate.augment.vqa_sources import table_images\n"
        f"got = table_images({str(path)!r}, 'image', [5, 400, 401], 1 << 20)\n"
        "print(pa.default_memory_pool().max_memory() >> 20, pa.total_allocated_bytes() >> 20,\n"
        "      [(r, len(got[r])) for r in sorted(got)])\n")
    done = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mib, kept_mib, got = done.stdout.split(" ", 2)
    assert got.strip() == "[(5, 200000), (400, 200000), (401, 200000)]"
    assert int(peak_mib) < 80 and int(kept_mib) < 40, f"{peak_mib} MiB at peak, {kept_mib} MiB kept"


def test_listing_a_table_of_large_row_groups_says_how_to_read_it_once(tables, monkeypatch, caplog):
    from curate.augment import vqa_sources

    paths, _ = tables
    list(vqa_batches(source(paths["structs"])))
    assert not caplog.records  # groups under GROUP_KEPT_BYTES: nothing to say
    monkeypatch.setattr(vqa_sources, "GROUP_KEPT_BYTES", 100)
    list(vqa_batches(source(paths["structs"])))
    [record] = caplog.records
    assert str(paths["structs"]) in record.getMessage() and "row_group_size" in record.getMessage()


def test_rows_of_a_table_holding_images_are_keyed_by_their_row_group(tables):
    from curate.augment.vqa_sources import row_group_keys

    paths, _ = tables
    keys = row_group_keys(source(paths["structs"]))
    listed = pa.table({"table_row": pa.array([0, 1, 2, 3, 4, None], pa.int64())})
    assert keys(listed) == [0, 0, 1, 1, 2, -1]  # groups of two rows; a row not from the table is its own
    assert row_group_keys(source(paths["paths"])) is None  # each image its own file: nothing shared
    assert row_group_keys(VqaSourceConfig(format="table", path=str(paths["bytes"]), image_column="nope")) is None
