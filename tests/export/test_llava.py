"""`curate export llava`: question shards and canvas shards as LLaVA conversation JSON + images."""

from __future__ import annotations

import json
import tarfile

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.export.llava import export_llava, grounding
from tests.io.test_corpus import write_question_corpus


def test_grounding_scales_corners_to_0_1000():
    assert grounding([5, 5, 30, 30], 64, 48) == "<box>(78,104),(469,625)</box>"


@pytest.mark.parametrize("box_in", ["answer", "question", "none"])
def test_questions_become_conversations_with_the_image_once(tmp_path, box_in):
    rows = write_question_corpus(tmp_path / "corpus", n=3)
    result = export_llava(tmp_path / "corpus", tmp_path / "llava", box_in=box_in)
    entries = json.loads((tmp_path / "llava" / "llava.json").read_text())
    assert result.counts == {"entries": 3, "images": 3} and len(entries) == 3
    for entry, row in zip(entries, rows):
        human, gpt = entry["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert "Which bus number" in human["value"] and gpt["value"].startswith("A bus with the number 42")
        assert ("<box>(78,104),(469,625)</box>" in gpt["value"]) == (box_in == "answer")
        assert ("<box>" in human["value"]) == (box_in == "question")
        assert entry["box"] == [5, 5, 30, 30] and (entry["width"], entry["height"]) == (64, 48)
        assert (tmp_path / "llava" / entry["image"]).read_bytes() == row["image"]  # bytes as stored


def test_canvas_outputs_keep_their_conversations(tmp_path, canvas_output):
    canvas, folder = canvas_output
    export_llava(canvas, tmp_path / "llava")
    entries = json.loads((tmp_path / "llava" / "llava.json").read_text())
    source = json.loads((folder / "llava.json").read_text())
    assert [e["conversations"] for e in entries] == [s["conversations"] for s in source]
    with tarfile.open(next((canvas / "shards").glob("*.tar"))) as tar:
        first = tar.extractfile(tar.getmembers()[0]).read()
    assert (tmp_path / "llava" / entries[0]["image"]).read_bytes() == first


def test_a_corpus_without_questions_says_so(tmp_path):
    from tests.safety.conftest import load

    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "corpus")
    from curate.io.corpus import CorpusWriter

    CorpusWriter(cfg.output.path, cfg).open().finish()
    result = CliRunner().invoke(app, ["export", "llava", str(tmp_path / "corpus"), str(tmp_path / "x")])
    assert result.exit_code == 2 and "retarget.backend" in " ".join(result.output.split())


def test_a_corpus_whose_questions_were_all_dropped_says_why():
    from curate.export.llava import why_no_questions

    manifest = {"stages": {"retarget": {"counts": {"prompts": 500, "generated_tokens": 24000,
                                                   "dropped.not_a_question": 499, "dropped.too_short": 1}}}}
    assert why_no_questions(manifest) == ("the retarget stage dropped every question it wrote: 500 prompts, "
                                          "not_a_question 499, too_short 1; each region's question_skipped says "
                                          "why (curate inspect)")
    assert "no captioned region" in why_no_questions({"stages": {"retarget": {"counts": {}}}})
    assert "retarget.backend" in why_no_questions({"stages": {"retarget": {"skipped": "backend none"}}})
