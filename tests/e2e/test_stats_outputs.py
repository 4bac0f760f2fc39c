"""`curate stats` covers the fine-tuning outputs: question shards and canvas outputs."""

from __future__ import annotations

import json

import pytest

from curate.stats.compute import compute_stats
from curate.stats.report import write_report
from tests.e2e.test_model_pipeline import model_corpus  # noqa: F401  (module-scoped pipeline run)

# whole pipelines through Ray (or subprocesses): minutes on two cores
pytestmark = pytest.mark.slow


def test_question_table_and_throughput_from_a_retargeting_run(model_corpus):  # noqa: F811
    out, _ = model_corpus
    stats, _ = compute_stats(out)
    manifest = json.loads((out / "manifest.json").read_text())
    retarget = manifest["stages"]["retarget"]["counts"]
    assert stats.questions is not None
    assert stats.questions.asked == retarget["prompts"] > 0
    assert stats.questions.kept + sum(stats.questions.dropped.values()) == stats.questions.asked
    caption_rates = next(s for s in stats.stages if s.stage == "caption").rates
    assert caption_rates["crops_per_s"] > 0
    report = write_report(out, gallery=0).read_text()
    assert "Questions (top-down selection fine-tuning data)" in report
    assert "question_words.png" in report


def test_canvas_output_report(tmp_path):
    from curate.augment.config import load_canvas_config
    from curate.augment.run import run_canvas
    from curate.samples import generate_vqa_samples
    from tests.conftest import REPO

    vqa = generate_vqa_samples(tmp_path / "vqa", count=4)
    out = tmp_path / "canvas"
    run_canvas(load_canvas_config(REPO / "pipelines" / "canvas.yaml", [
        f"source.path={vqa / 'llava.json'}", f"source.images={vqa / 'images'}", f"output.path={out}",
        "canvas.long_side=[512,1024]", "ray.progress=false"]))
    report = write_report(out, gallery=2)
    stats = json.loads((report.parent / "stats.json").read_text())
    assert stats["counts"] == {"read": 4, "written": 4, "quarantined": 0}
    assert sum(stats["backgrounds"].values()) == 4 and stats["turns_mean"] == 6.0
    assert sum(stats["histograms"]["pasted_area_fraction"]["counts"]) == 4
    text = report.read_text()
    assert text.startswith("# Canvas report: canvas (complete)")
    assert "canvas_00.png" in text and (report.parent / "canvas_01.png").exists()
    assert "data:image/png;base64," in (report.parent / "report.html").read_text()
