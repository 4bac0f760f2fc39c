"""`curate validate` checks what a run needs (run as a real command in a subprocess), and an empty
input set is an error unless --allow-empty."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import REPO
from tests.safety.conftest import image_files


def curate(*args, cwd=REPO):
    done = subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def config(tmp_path, **masks):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "v", "sources": [{"type": "dir", "path": str(tmp_path / "in")}],
        "masks": {"natural": {"backend": "skimage_felzenszwalb", **masks}},
        "output": {"path": str(tmp_path / "out")}, "ray": {"progress": False}}))
    return path


def test_a_sound_config_validates(tmp_path):
    image_files(tmp_path / "in", 1)
    code, text = curate("validate", config(tmp_path))
    assert code == 0 and "check out" in text


def test_each_problem_is_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "v", "sources": [{"type": "dir", "path": str(tmp_path / "missing")},
                                 {"type": "dir", "path": str(tmp_path / "empty")}],
        "masks": {"natural": {"backend": "efficientvit_sam", "checkpoint": str(tmp_path / "nope.pt"),
                              "num_gpus": 1}},
        "output": {"path": str(tmp_path / "foreign")}}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("x")
    code, text = curate("validate", path)
    assert code == 1
    assert "masks.natural.checkpoint" in text and "nope.pt" in text
    assert "sources.0" in text and "does not exist" in text
    assert "sources.1" in text and "holds no input image" in text
    assert "not a curate output" in text
    assert ("ask for a GPU" in text) == (not torch.cuda.is_available())
    code, text = curate("validate", path, "--allow-empty")
    assert "sources.1" not in text


def test_validate_takes_the_inputs_a_run_would_take(tmp_path):
    # the command a user is about to run, checked first: -i replaces the config's sources, as in run
    image_files(tmp_path / "photos", 1)
    code, text = curate("validate", config(tmp_path), "-i", tmp_path / "photos", "-o", tmp_path / "out2")
    assert code == 0 and "check out" in text  # the config's own source (in/) does not exist
    code, text = curate("validate", config(tmp_path), "--input", tmp_path / "photos", "-i", tmp_path / "gone")
    assert code == 1 and "sources.1" in text and "gone" in text and "does not exist" in text
    assert "sources.0" not in text


def test_one_image_file_is_an_input_too(tmp_path):
    (photo,) = image_files(tmp_path / "photos", 1)
    odd = photo.rename(photo.with_name("shot [1].png"))  # a name a glob would misread
    code, text = curate("validate", config(tmp_path), "-i", odd)
    assert code == 0 and "check out" in text, text


def test_a_set_typo_names_the_set_argument(tmp_path):
    code, text = curate("validate", config(tmp_path), "--set", "select.max_boxs=5")
    assert code == 2 and "select.max_boxs: unknown key (did you mean max_boxes?) (from --set select.max_boxs=5)" in text


@pytest.mark.slow
def test_an_empty_input_set_is_an_error_unless_allowed(tmp_path):
    (tmp_path / "in").mkdir()
    code, text = curate("run", config(tmp_path))
    assert code == 2 and "no input image" in text and "--allow-empty" in text
    assert not (tmp_path / "out").exists()  # the failed run gave its new output back
    code, text = curate("run", config(tmp_path), "--allow-empty")
    assert code == 0 and "read 0 = written 0 + quarantined 0" in text


def test_a_source_of_only_files_curate_does_not_read_is_named_before_the_run(tmp_path):
    """A folder of scanned PDFs listed (each quarantined) and validated as sound; the run then wrote nothing."""
    from curate.config import load_config
    from curate.preflight import source_problems

    (tmp_path / "in").mkdir()
    for name in ("a.pdf", "b.pdf"):
        (tmp_path / "in" / name).write_bytes(b"%PDF-1.4")
    problems = source_problems(load_config(config(tmp_path)))
    assert len(problems) == 1 and problems[0].startswith(f"sources.0: {tmp_path / 'in'}: all 2 inputs listed are "
                                                         "quarantined before a byte is read")
    assert "unsupported_format: PDF documents are not read" in problems[0] and "a.pdf" in problems[0]
    image_files(tmp_path / "in", 1)  # one photo among them: the run has work, the PDFs are its quarantine
    assert source_problems(load_config(config(tmp_path))) == []


def test_every_option_of_run_is_taken_so_a_run_command_validates_as_it_is(tmp_path):
    """`curate run P -i X -o Y --limit 50 --verify -v` with `validate` in place of `run` was refused
    ("No such option: --limit"); the options that check nothing are taken as they are."""
    image_files(tmp_path / "in", 1)
    code, text = curate("validate", config(tmp_path), "-i", tmp_path / "in", "-o", tmp_path / "out",
                        "--limit", "50", "--verify", "--verbose", "--allow-empty")
    assert code == 0 and "check out" in text, text
    code, text = curate("validate", config(tmp_path), "--address", "127.0.0.1:1")  # no cluster is contacted
    assert code == 0 and "check out" in text, text
