"""Resuming into an output trained with another model config is refused with what differs."""

from __future__ import annotations

import pytest


def test_resuming_with_another_model_config_names_the_checkpoint(tmp_path):
    from curate.train.config import TrainConfig
    from curate.train.loop import train
    from tests.io.test_corpus import write_question_corpus

    write_question_corpus(tmp_path / "corpus", n=2)

    def cfg(select_dim: int) -> TrainConfig:
        return TrainConfig.model_validate({
            "data": {"shards": [str(tmp_path / "corpus" / "shards" / "*.tar")]},
            "model": {"low_res": 32, "hi_res": 64, "select_k": 4, "select_dim": select_dim},
            "optim": {"steps": 1, "batch_size": 2, "warmup_steps": 0}, "out": str(tmp_path / "t")})

    train(cfg(16))
    with pytest.raises(RuntimeError, match="model.select_dim: 16 there, 32 here.*resume: false"):
        train(cfg(32))
