"""`curate evaluate`: selection recall of a trained checkpoint on shards, with the picture."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from curate.cli import app
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_evaluate_reports_recall_beside_random_and_draws_score_maps(local_shards, tmp_path):
    out = tmp_path / "train"
    common = ["--set", f"data.shards=[{local_shards}]", "--set", f"out={out}", "--set", "optim.steps=6",
              "--set", "log_every=3"]
    trained = CliRunner().invoke(app, ["train", str(REPO / "pipelines" / "train_local.yaml"), *common,
                                       "--eval", "--set", f"eval.shards=[{local_shards}]"])
    assert trained.exit_code == 0, trained.output
    printed = " ".join(trained.output.split())
    assert "recall top-down" in printed and "held-out images" in printed
    report = json.loads((out / "eval" / "eval.json").read_text())
    # the tiny corpus has no held-out split: this checks the report, not the model's quality
    assert report["images"] >= 3 and report["regions"] >= report["images"]
    for key in ("recall_top_down", "recall_bottom_up", "recall_random"):
        assert 0.0 <= report[key] <= 1.0, key
    assert len(report["hires_recall_per_scale"]) == 2
    assert (out / "eval" / "selection.png").stat().st_size > 1000

    again = CliRunner().invoke(app, ["evaluate", str(REPO / "pipelines" / "train_local.yaml"), *common,
                                     "--shards", local_shards, "--checkpoint", str(out / "last.pt")])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "eval" / "eval.json").read_text())["recall_top_down"] == report["recall_top_down"]


def test_evaluate_names_a_missing_checkpoint(local_shards, tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(REPO / "pipelines" / "train_local.yaml"),
                                      "--shards", local_shards, "--set", f"out={tmp_path / 'none'}"])
    printed = "".join(result.output.split())
    assert result.exit_code != 0 and "nocheckpoint" in printed and str(tmp_path / "none") in printed


def test_a_missing_checkpoint_or_shards_are_named_before_the_text_model_loads(tmp_path, monkeypatch):
    import curate.train.evaluate as evaluate_module
    from curate.train.config import load_train_config

    def must_not_load(*args, **kwargs):
        raise AssertionError("the text model loaded before the checkpoint and shards were checked")

    monkeypatch.setattr(evaluate_module, "FrozenTextEncoder", must_not_load)
    (tmp_path / "shard.tar").write_bytes(b"")
    cfg = load_train_config(REPO / "pipelines" / "train_local.yaml",
                            [f"out={tmp_path / 'none'}", f"eval.shards={tmp_path}/shard.tar"])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate_module.evaluate(cfg)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "last.pt").write_bytes(b"")
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"shards": [f"{tmp_path}/nothing/*.tar"]})})
    with pytest.raises(FileNotFoundError, match="eval.shards: nothing matches"):
        evaluate_module.evaluate(cfg)
