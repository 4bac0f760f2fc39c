"""The documents stage (pages on CPU actors) gives pages the regions and OCR captions that the
combined regions and caption stages give them, and leaves photos to the GPU stages."""

import json

from curate.config import load_config
from curate.ops.decode import ingest_row
from curate.rows import new_row
from curate.stages.caption import CaptionStage, NaturalCaptionStage
from curate.stages.documents import DocumentStage
from curate.stages.regions import NaturalRegionsStage, RegionsStage
from tests.conftest import REPO, noise_image
from tests.stages.test_regions import page_file


def test_pages_apart_get_what_the_combined_stages_give_them(tmp_path):
    photo = tmp_path / "photo.jpg"
    noise_image(1600, 1200, seed=3).save(photo, quality=90)
    cfg = load_config(REPO / "pipelines" / "local.yaml", ["masks.natural.work_side=512", "caption.global.mode=none"])

    def ingested():
        return [ingest_row(new_row(str(p), "t"), cfg.ingest) for p in (page_file(tmp_path), photo)]

    together = CaptionStage(cfg).process(RegionsStage(cfg).process(ingested()))
    apart = ingested()
    NaturalCaptionStage(cfg).process(NaturalRegionsStage(cfg).process(apart))
    page, photo_row = apart
    assert json.loads(page["regions"]) == [] and json.loads(photo_row["regions"])  # the page waits
    DocumentStage(cfg).process(apart)
    for key in ("regions", "models", "global_caption"):
        assert [r[key] for r in apart] == [r[key] for r in together], key
    captions = [r.get("caption") for r in json.loads(page["regions"])]
    assert any(c and "quarterly report" in c for c in captions), captions  # real OCR text
    page_events = json.loads(page["events"])
    assert page_events["documents.captioned"] >= 1 and not any(k.startswith("caption.") for k in page_events)
    assert any(k.startswith("caption.") for k in json.loads(photo_row["events"]))  # skipped: no MLLM offline
