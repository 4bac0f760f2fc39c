"""The training config as a user writes it, in YAML or with --set."""

from __future__ import annotations

from curate.train.config import load_train_config
from tests.conftest import REPO


def test_one_shard_glob_may_be_given_without_a_list():
    # `--set data.shards=out/shards/*.tar` is how a first try reads; a list of one is what it means
    cfg = load_train_config(REPO / "pipelines" / "train_local.yaml",
                            ["data.shards=out/x/shards/*.tar", "data.ps3_text_box=ps3/text_box/*.tar",
                             "eval.shards=held-out/*.tar"])
    assert cfg.data.shards == ["out/x/shards/*.tar"] and cfg.data.ps3_text_box == ["ps3/text_box/*.tar"]
    assert cfg.eval.shards == ["held-out/*.tar"]
    listed = load_train_config(REPO / "pipelines" / "train_local.yaml", ['data.shards=["a/*.tar", "b/*.tar"]'])
    assert listed.data.shards == ["a/*.tar", "b/*.tar"]
