"""Shards for the trainer's tests, made once per session by a pipeline run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_shards(tmp_path_factory, sample_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.config import load_config
    from curate.pipeline import run_pipeline
    from tests.conftest import REPO, local_overrides

    tmp = tmp_path_factory.mktemp("train-corpus")
    # listed with a caption column: caption.global (source) writes them as global captions
    images = sorted(str(p) for p in sample_dir.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg"))
    pq.write_table(pa.table({"uri": images, "caption": [f"A page or photo number {i}." for i in range(len(images))]}),
                   tmp / "list.parquet")
    out = tmp / "out"
    run_pipeline(load_config(REPO / "pipelines" / "local.yaml", local_overrides(out, sample_dir) + [
        "sources.0.type=list", f"sources.0.path={tmp / 'list.parquet'}", "sources.0.caption_column=caption",
        "caption.global.mode=source"]))
    return str(out / "shards" / "*.tar")
