"""The training loader reads region, question and canvas shards into the same sample form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from curate.train.config import TrainConfig
from curate.train.data import make_dataset
from curate.train.score_maps import box_score_map


def cfg_for(shards: list[str], batch_size: int = 1, **data) -> TrainConfig:
    return TrainConfig.model_validate({"data": {"shards": shards, **data}, "optim": {"batch_size": batch_size},
                                       "model": {"low_res": 64, "hi_res": 128}})


def test_question_shards_read_their_image_from_the_region_shard(tmp_path):
    from tests.io.test_corpus import write_question_corpus

    rows = write_question_corpus(tmp_path)
    batches = list(make_dataset(cfg_for([str(tmp_path / "questions" / "*.tar")]), grid=8, epoch_seed=0))
    assert len(batches) == 3
    batch = batches[0]
    assert batch["texts"] == ["Which bus number is shown on the front sign?"]
    assert batch["global"].shape == (1, 3, 64, 64)
    (hires,) = batch["hires"]  # native aspect, uint8; a 64 x 48 image is below hi_res and kept as is
    assert hires.dtype == torch.uint8 and tuple(hires.shape) == (3, 48, 64)
    box = json.loads(rows[0]["regions"])[1]["box_norm"]
    torch.testing.assert_close(batch["top_down"][0], torch.tensor(box_score_map(box, 8, 8), dtype=torch.float32))
    # region shards give the same image: both views decode from the same bytes
    region = list(make_dataset(cfg_for([str(tmp_path / "shards" / "*.tar")]), grid=8, epoch_seed=0))[0]
    torch.testing.assert_close(region["global"], batch["global"])
    # region shards' bottom-up map covers every box of the image, captioned or not
    boxes = [r["box_norm"] for r in json.loads(rows[0]["regions"])]
    assert region["bottom_up"][0].sum() > torch.tensor(box_score_map(boxes[1], 8, 8)).sum()


def test_canvas_shards_give_the_pasted_box_and_the_qa_as_text(tmp_path):
    from curate.augment.config import load_canvas_config
    from curate.augment.run import run_canvas
    from curate.samples import generate_vqa_samples
    from tests.conftest import REPO

    vqa = generate_vqa_samples(tmp_path / "vqa", count=3)
    run_canvas(load_canvas_config(REPO / "pipelines" / "canvas.yaml", [
        f"source.path={vqa / 'llava.json'}", f"source.images={vqa / 'images'}", f"output.path={tmp_path / 'c'}",
        "canvas.long_side=[512,1024]", "ray.progress=false"]))
    (batch,) = list(make_dataset(cfg_for([str(tmp_path / "c" / "shards" / "*.tar")], batch_size=3), 8, 0))
    assert len(batch["texts"]) == 3
    assert all(t.startswith("What colour is the circle? ") for t in batch["texts"])
    assert torch.equal(batch["region_image"], torch.arange(3))
    assert np.allclose(batch["top_down"].sum((1, 2)).numpy(),
                       [(b[2] - b[0]) * (b[3] - b[1]) * 64 for b in batch["boxes"].tolist()], rtol=1e-4)


def test_missing_shards_name_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing matches"):
        list(make_dataset(cfg_for([str(tmp_path / "none-*.tar")]), 8, 0))


def test_one_region_per_image_per_step_drawn_anew_each_epoch():
    from curate.train.data import draw_texts, sample_rng

    regions = [((0.1 * i, 0.0, 0.1 * i + 0.1, 0.1), f"region {i}") for i in range(6)] + [((0, 0, 1, 1), None)]
    drawn = {epoch: draw_texts(regions, None, 1, 0.25, sample_rng("k", epoch)) for epoch in range(12)}
    assert all(len(texts) == 1 and not is_global for texts, is_global in drawn.values())
    assert len({texts[0][1] for texts, _ in drawn.values()}) > 2  # different regions over epochs
    assert drawn[3] == draw_texts(regions, None, 1, 0.25, sample_rng("k", 3))  # a resumed run draws the same
    three, _ = draw_texts(regions, None, 3, 0.0, sample_rng("k", 0))
    assert [t for _, t in three] == sorted(t for _, t in three)  # kept in reading order


def test_global_captions_are_drawn_with_their_probability():
    from curate.train.data import draw_texts, sample_rng

    regions = [((0.1, 0.1, 0.2, 0.2), "a cup")]
    draws = [draw_texts(regions, "A kitchen.", 1, 0.25, sample_rng(f"k{i}", 0))[1] for i in range(2000)]
    assert 0.2 < sum(draws) / len(draws) < 0.3
    whole = ([((0.0, 0.0, 1.0, 1.0), "A kitchen.")], True)
    assert draw_texts(regions, "A kitchen.", 1, 1.0, sample_rng("k", 0)) == whole
    assert not draw_texts(regions, None, 1, 1.0, sample_rng("k", 0))[1]  # no global caption: its regions
