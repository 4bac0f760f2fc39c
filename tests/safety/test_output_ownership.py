"""Cases 1, 9, 10, 11: curate never writes into (or cleans up) a directory it does not own, and
parses the output path once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.io.corpus import CorpusWriter
from curate.io.layout import OutputLayout
from curate.io.ownership import OutputRefused, claim_output
from tests.conftest import REPO
from tests.io.test_corpus import ok_row
from tests.safety.conftest import image_files, load, manifest, write_tar


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_run(*args):
    """`curate run` on the offline pipeline; the result's output with the terminal's wrapping undone."""
    result = CliRunner().invoke(app, ["run", str(REPO / "pipelines" / "local.yaml"), "--set", "ray.progress=false",
                                      *args])
    result.text = " ".join(result.output.split())
    return result


def test_case1_a_foreign_webdataset_as_output_is_refused_and_left_intact(tmp_path):
    corpus = tmp_path / "C"
    for n in range(3):
        write_tar(corpus / "shards" / f"train-{n:06d}.tar", {f"k{n}.png": b"x" * 100, f"k{n}.json": b"{}"})
    (corpus / "shards" / "train-000009.tar.tmp").write_bytes(b"someone else's temp file")
    before = snapshot(corpus)
    result = cli_run("--input", str(corpus / "shards" / "*.tar"), "--output", str(corpus))
    assert result.exit_code == 2, result.output
    assert "overlaps the input" in result.text and "nothing was changed" in result.text
    # The same directory as output of another input: not empty, not ours.
    other = tmp_path / "other"
    image_files(other, 1)
    result = cli_run("--input", str(other), "--output", str(corpus))
    assert result.exit_code == 2, result.output
    assert "was not written by curate" in result.text
    assert snapshot(corpus) == before


def test_case1_root_as_output_is_refused_before_anything_is_written(tmp_path):
    inputs = tmp_path / "in"
    image_files(inputs, 1)
    root = OutputLayout(Path("/"))
    with pytest.raises(OutputRefused, match="input inside the output"):
        claim_output(root, "corpus", "0" * 64, [str(inputs)])
    with pytest.raises(OutputRefused, match="not empty"):  # inputs elsewhere (a list of URIs)
        claim_output(root, "corpus", "0" * 64, ["s3://bucket/list.txt"])
    assert not os.path.exists("/.curate")


def test_case1_a_curate_output_used_as_its_own_input_is_refused(tmp_path):
    out = tmp_path / "C"
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], out)
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(4):
        writer.add(ok_row(i))
    writer.finish()
    before = snapshot(out)
    result = cli_run("--input", str(out / "shards" / "*.tar"), "--output", str(out))
    assert result.exit_code == 2 and "overlaps the input" in result.text
    assert snapshot(out) == before


def test_case9_an_output_path_with_a_colon_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, [{"type": "dir", "path": "in"}], tmp_path / "unused")
    cfg.output.path = "run-12:00"
    writer = CorpusWriter(cfg.output.path, cfg).open()
    for i in range(3):
        writer.add(ok_row(i))
    writer.finish()
    assert manifest(tmp_path / "run-12:00")["status"] == "complete"
    from curate.io.reader import find_record
    from curate.stats.compute import compute_stats

    assert find_record("run-12:00", f"{1:020x}")["key"] == f"{1:020x}"
    assert compute_stats("run-12:00")[0].counts.written == 3
    # And a resume of it works too.
    again = CorpusWriter(cfg.output.path, cfg).open()
    assert again.resumed_rows == 3
    again.finish()


def test_case11_an_output_inside_the_input_directory_is_refused(tmp_path):
    inputs = tmp_path / "photos"
    image_files(inputs, 2)
    result = cli_run("--input", str(inputs), "--output", str(inputs / "out"))
    assert result.exit_code == 2 and "output inside the input" in result.text
    assert not (inputs / "out").exists()


def test_a_typo_in_a_source_leaves_no_output_behind(tmp_path):
    out = tmp_path / "out"
    result = cli_run("--input", str(tmp_path / "phtos"), "--output", str(out))
    assert result.exit_code == 2 and "does not exist" in result.text
    assert not out.exists()  # so the corrected command is not refused as "another config"


def test_an_empty_directory_is_claimed_and_marked(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], out)
    CorpusWriter(cfg.output.path, cfg).open().finish()
    marker = json.loads((out / ".curate" / "output.json").read_text())
    assert marker["kind"] == "corpus" and marker["config_sha256"] == cfg.sha256()
