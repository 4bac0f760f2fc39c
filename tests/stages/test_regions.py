"""RegionsStage picks the region source per kind: OCR text lines for documents when configured."""

import json

from PIL import Image, ImageDraw, ImageFont

from curate.config import load_config
from curate.ops.decode import ingest_row
from curate.rows import new_row
from curate.stages.regions import DocumentRegionsStage, NaturalRegionsStage, RegionsStage
from tests.conftest import REPO, noise_image


def page_file(folder):
    img = Image.new("RGB", (1700, 2200), "white")
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.text((150, 200 + i * 70), f"Line {i} of the quarterly report summary", fill="black",
                  font=ImageFont.load_default(size=36))
    path = folder / "page.png"
    img.save(path)
    return path


def test_documents_use_ocr_layout_and_photos_use_masks(tmp_path):
    photo = tmp_path / "photo.jpg"
    noise_image(1600, 1200, seed=3).save(photo, quality=90)
    cfg = load_config(REPO / "pipelines" / "local.yaml", ["masks.document.backend=ocr_layout",
                                                           "masks.natural.work_side=512"])
    rows = [ingest_row(new_row(str(p), "t"), cfg.ingest) for p in (page_file(tmp_path), photo)]
    assert [r["kind"] for r in rows] == ["document", "natural"]
    RegionsStage(cfg).process(rows)
    doc, nat = rows
    assert json.loads(doc["models"])["masks"].startswith("rapidocr text-line detection")
    assert json.loads(nat["models"])["masks"].startswith("skimage")
    regions = json.loads(doc["regions"])
    assert regions, doc["regions_note"]
    for r in regions:  # text blocks: wider than tall, within the text column
        x0, y0, x1, y1 = r["box"]
        assert x0 >= 100 and x1 - x0 > y1 - y0 and y0 >= 150 and y1 <= 1100


def test_documents_apart_split_the_work_and_give_the_same_regions(tmp_path):
    photo = tmp_path / "photo.jpg"
    noise_image(1600, 1200, seed=3).save(photo, quality=90)
    cfg = load_config(REPO / "pipelines" / "local.yaml", ["masks.document.backend=ocr_layout",
                                                           "masks.natural.work_side=512"])

    def ingested():
        return [ingest_row(new_row(str(p), "t"), cfg.ingest) for p in (page_file(tmp_path), photo)]

    together = RegionsStage(cfg).process(ingested())
    apart = ingested()
    NaturalRegionsStage(cfg).process(apart)
    assert json.loads(apart[0]["regions"]) == [] and json.loads(apart[1]["regions"])  # the page waits
    DocumentRegionsStage(cfg).process(apart)
    assert [r["regions"] for r in apart] == [r["regions"] for r in together]
    assert "documents.boxes" in json.loads(apart[0]["events"]) and "regions.boxes" in json.loads(apart[1]["events"])

