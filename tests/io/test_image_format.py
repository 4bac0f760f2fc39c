"""output.image_format: one image format per corpus, so HF datasets' webdataset builder (which refuses
shards mixing .jpg and .png members) reads a corpus made from mixed inputs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from curate.config import IngestConfig
from curate.ops.decode import ingest_row
from curate.rows import new_row
from tests.conftest import jpeg_bytes, noise_image, png_bytes
from tests.safety.conftest import load, no_ray  # noqa: F401  (fixture)


def mixed_inputs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        image = noise_image(320, 280, seed=i)
        if i % 2:
            (folder / f"img-{i}.jpg").write_bytes(jpeg_bytes(image))
        else:
            (folder / f"img-{i}.png").write_bytes(png_bytes(image))
    return folder


@pytest.mark.parametrize("fmt, pil", [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_every_image_is_stored_in_the_chosen_format_and_says_why(tmp_path, fmt, pil):
    rows = [ingest_row(new_row(str(p), "d"), IngestConfig(), fmt, 90) for p in sorted(mixed_inputs(tmp_path).iterdir())]
    assert {r["image_ext"] for r in rows} == {fmt}
    for r in rows:
        assert Image.open(io.BytesIO(r["image"])).format == pil
        source_is_already = r["uri"].endswith(f".{fmt}")
        assert (r["reencoded"] is None) == source_is_already  # bytes kept when already in the format
    png = [r for r in rows if r["uri"].endswith(".png")][0]
    if fmt == "png":
        assert png["image"] == (tmp_path / "img-0.png").read_bytes()


def test_keep_stores_each_input_in_its_own_format(tmp_path):
    rows = [ingest_row(new_row(str(p), "d"), IngestConfig()) for p in sorted(mixed_inputs(tmp_path).iterdir())]
    assert sorted(r["image_ext"] for r in rows) == ["jpg", "jpg", "png", "png"]
    assert all(r["reencoded"] is None for r in rows)


def test_hf_datasets_reads_a_corpus_made_from_mixed_formats(tmp_path, no_ray):  # noqa: F811
    from datasets import load_dataset

    inputs = mixed_inputs(tmp_path / "in")
    cfg = load(tmp_path, [{"type": "dir", "path": str(inputs)}], tmp_path / "out", image_format="png")
    result = no_ray(cfg)
    assert result.written == 4
    files = sorted(str(p) for p in (tmp_path / "out" / "shards").glob("*.tar"))
    ds = load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 4 and {"json", "png", "__key__"} <= set(ds.column_names)
