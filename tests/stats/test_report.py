"""`curate stats` on a small corpus written through the real writer (no Ray), checked in Chromium."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from curate.config import load_config
from curate.io.corpus import CorpusWriter
from curate.rows import new_row, quarantine
from curate.stats.compute import compute_stats
from curate.stats.report import write_report


def png(width: int, height: int, seed: int) -> bytes:
    img = Image.new("RGB", (width, height), (240, 240, 235))
    draw = ImageDraw.Draw(img)
    draw.rectangle([width // 4, height // 4, width // 2, height // 2], fill=(30 * seed % 255, 90, 160))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def region(box, caption=None, source=None):
    x0, y0, x1, y1 = box
    r = {"box": list(box), "box_norm": [0, 0, 1, 1], "score": 1.0, "n_masks": 3, "mask_area_frac": 0.2}
    if caption:
        r.update(caption=caption, caption_source=source, caption_model="test")
    else:
        r["caption_skipped"] = "natural captioning skipped: test"
    return r


def make_corpus(root: Path, name: str = "t") -> Path:
    """3 documents at 1500x1200 (2 boxes 100x50, OCR captions of 3 and 5 words), 2 natural images at
    2500x2000 (4 boxes 200x100, no caption), 1 quarantined input."""
    cfg_path = root / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump({"name": name, "sources": [{"type": "dir", "path": "x"}],
                                        "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
                                        "output": {"path": str(root / name), "shard_max_samples": 2}}))
    cfg = load_config(cfg_path)
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(5):
        doc = i < 3
        w, h = (1500, 1200) if doc else (2500, 2000)
        data = png(w, h, i)
        regions = ([region((10, 10, 110, 60), "one two three", "ocr"), region((200, 10, 300, 60), "a b c d e", "ocr")]
                   if doc else [region((x, 0, x + 200, 100)) for x in (0, 300, 600, 900)])
        row = new_row(f"/in/{i}.png", "docs" if doc else "photos")
        row.update(status="ok", key=f"{i:020x}", sha256=f"{i:064x}", kind="document" if doc else "natural",
                   image=data, image_ext="png", width=w, height=h, regions=json.dumps(regions),
                   timings=json.dumps({"ingest": 0.1, "regions": 0.3}),
                   events=json.dumps({"caption.captioned": 2} if doc else {"caption.skipped": 4}))
        writer.add(row)
    writer.add(quarantine(new_row("/in/bad.jpg", "docs"), "truncated", "cut"))
    writer.finish()
    return Path(cfg.output.path)


def test_numbers_from_the_index_and_manifest(tmp_path):
    stats, _ = compute_stats(make_corpus(tmp_path))
    assert (stats.counts.read, stats.counts.written, stats.counts.quarantined) == (6, 5, 1)
    buckets = {(b.kind, b.bucket): b for b in stats.buckets}
    doc, nat = buckets[("document", "1K-2K")], buckets[("natural", "2K-4K")]
    assert (doc.images, doc.boxes, doc.boxes_per_image, doc.avg_box_w, doc.avg_box_h) == (3, 6, 2.0, 100.0, 50.0)
    assert (nat.images, nat.boxes, nat.avg_box_w, nat.avg_box_h) == (2, 8, 200.0, 100.0)
    assert stats.captions.by_source == {"ocr": 6} and stats.captions.words_mean == 4.0
    assert stats.captions.dropped == {"skipped": 8}
    assert stats.quarantine_reasons == {"truncated": 1}
    assert sum(stats.histograms["boxes_per_image"].counts) == 5
    assert sum(stats.histograms["box_size"].counts) == 14
    stages = {s.stage: s for s in stats.stages}
    assert stages["regions"].seconds == pytest.approx(1.5) and stages["regions"].time_share == pytest.approx(0.75)
    assert {(s.dataset, s.kind, s.images) for s in stats.per_source} == {("docs", "document", 3),
                                                                         ("photos", "natural", 2)}


def test_report_files_and_compare(tmp_path):
    out = make_corpus(tmp_path, "a")
    other = make_corpus(tmp_path, "b")
    report = write_report(out, compare=other, gallery=3)
    folder = report.parent
    assert {"report.md", "report.html", "stats.json"} <= {p.name for p in folder.iterdir()}
    assert len(list(folder.glob("gallery-*.png"))) == 3
    text = report.read_text()
    assert "PS3 Table 9" in text and "compared with: b" in text
    saved = json.loads((folder / "stats.json").read_text())
    import jsonschema

    schema = json.loads((Path(__file__).parents[2] / "schemas" / "corpus_stats.schema.json").read_text())
    jsonschema.validate(saved, schema)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium)")
def test_html_report_renders_in_a_real_browser(tmp_path):
    out = make_corpus(tmp_path)
    folder = write_report(out, gallery=3).parent
    url = (folder / "report.html").resolve().as_uri()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
              "--window-size=1400,2400"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    body = dom[dom.index("<body"): dom.index(">", dom.index("<body"))]
    total = int(body.split('data-images-total="')[1].split('"')[0])
    loaded = int(body.split('data-images-loaded="')[1].split('"')[0])
    assert total == 7 + 3  # seven plots and three gallery samples
    assert loaded == total
    # every picture is drawn at its own aspect ratio (a flex row once stretched them to its tallest)
    assert int(body.split('data-images-distorted="')[1].split('"')[0]) == 0
    shot = folder / "report-screenshot.png"
    subprocess.run([*common, "--window-size=1400,2400", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120)
    assert shot.stat().st_size > 20_000
    assert Image.open(shot).size == (1400, 2400)


def test_gallery_says_a_skip_reason_once_for_all_its_boxes():
    from curate.stats.gallery import caption_lines

    skipped = {"box": [0, 0, 10, 10], "caption_skipped": "natural captioning skipped: no MLLM"}
    record = {"regions": [skipped, {"box": [1, 1, 5, 5], "caption": "A red  door."}, skipped, skipped]}
    assert [text for _, text in caption_lines(record)] == [
        "2. A red door.", "1, 3, 4. (natural captioning skipped: no MLLM)"]
