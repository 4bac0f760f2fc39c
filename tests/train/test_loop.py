"""Training on shards made by pipelines/local.yaml: the loss falls, and a resumed run continues the
same loss curve."""

from __future__ import annotations

import pytest

from curate.train.config import TrainConfig
from curate.train.loop import lr_factor, train

# trains a tiny model for tens of steps on shards made by a pipeline run
pytestmark = pytest.mark.slow


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def config(shards: str, out, steps: int, data: dict | None = None, **optim) -> TrainConfig:
    return TrainConfig.model_validate({
        "data": {"shards": [shards], **(data or {})},
        "model": {"vision": "tiny", "low_res": 64, "hi_res": 256, "select_k": 16, "embed_dim": 64},
        "optim": {"steps": steps, "batch_size": 2, "lr": 1e-3, "warmup_steps": 5, **optim},
        "out": str(out), "log_every": 1, "save_every": 1000})


def test_tiny_model_loss_falls_over_50_steps(local_shards, tmp_path):
    logs = train(config(local_shards, tmp_path, 50))
    assert [r["step"] for r in logs] == list(range(1, 51))
    # every sample has a global caption, drawn a quarter of the time: steps mix local and global pairs
    assert sum("global" in r for r in logs) >= 5 and sum("local" in r for r in logs) >= 25
    first = sum(r["total"] for r in logs[:5]) / 5
    last = sum(r["total"] for r in logs[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert (tmp_path / "last.pt").exists() and (tmp_path / "log.jsonl").read_text().count("\n") == 50


def test_resume_continues_the_same_loss_curve(local_shards, tmp_path):
    straight = train(config(local_shards, tmp_path / "a", 10, grad_accum=2))
    first_half = train(config(local_shards, tmp_path / "b", 10, grad_accum=2), stop_at=5)
    resumed = train(config(local_shards, tmp_path / "b", 10, grad_accum=2))
    assert [r["step"] for r in first_half] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in resumed] == [6, 7, 8, 9, 10]
    for a, b in zip(straight, first_half + resumed):
        assert a["total"] == pytest.approx(b["total"], rel=1e-4, abs=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])


def test_global_captions_are_counted_by_stats(local_shards):
    """caption.global: source writes the listing's captions as global_caption (the loss test above
    trains on them: PS3 Fig. 5a's global contrast); curate stats counts them."""
    from pathlib import Path

    from curate.stats.compute import compute_stats

    out = Path(local_shards).parents[1]
    stats, _ = compute_stats(out)
    assert stats.captions.global_captions == stats.counts.written > 0


def test_shards_that_match_nothing_fail_before_a_model_loads_or_the_out_folder_is_made(tmp_path, monkeypatch):
    """The text encoder used to load first (minutes for a real one) and `out` was left behind empty."""
    import curate.train.loop as loop
    from curate.train.config import load_train_config
    from tests.conftest import REPO

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model loaded before the shards were checked")

    monkeypatch.setattr(loop, "FrozenTextEncoder", must_not_load)
    cfg = load_train_config(REPO / "pipelines" / "train_local.yaml",
                            [f"data.shards={tmp_path}/none/*.tar", f"out={tmp_path / 'run'}"])
    with pytest.raises(FileNotFoundError, match=f"data.shards: nothing matches {tmp_path}/none/"):
        train(cfg)
    assert not (tmp_path / "run").exists()
    (tmp_path / "shard.tar").write_bytes(b"")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "shards": [str(tmp_path / "shard.tar")], "ps3_text_box": [f"{tmp_path}/boxes/*.tar"]})})
    with pytest.raises(FileNotFoundError, match="data.ps3_text_box: nothing matches"):
        train(cfg)
    assert not (tmp_path / "run").exists()
