"""The sam / efficientvit_sam backends: config -> generator glue, through the registry, on the CPU."""

import numpy as np
import pytest
from PIL import Image

from curate import backends
from curate.backends import masks_sam
from curate.backends.types import MaskSet
from curate.config import EfficientVitSamConfig, SamConfig
from curate.testing.tiny_sam import make_confident, tiny_sam


@pytest.fixture
def tiny_builders(monkeypatch):
    built = []

    def fake_build(variant, checkpoint=None):
        built.append((variant, checkpoint))
        return make_confident(tiny_sam(), iou_bias=0.0)

    monkeypatch.setattr(masks_sam, "build_sam", fake_build)
    monkeypatch.setattr(masks_sam, "build_efficientvit_sam", fake_build)
    return built


@pytest.mark.parametrize("cfg", [
    SamConfig(backend="sam", model="vit_b", checkpoint="sam.pth", points_per_side=4, crop_n_layers=0,
              pred_iou_thresh=0.0, stability_score_thresh=0.5),
    EfficientVitSamConfig(backend="efficientvit_sam", model="l0", checkpoint="evit.pt", points_per_side=4,
                          crop_n_layers=0, pred_iou_thresh=0.0, stability_score_thresh=0.5),
])
def test_backend_from_config_returns_full_resolution_masksets(tiny_builders, cfg):
    gen = backends.build(cfg)
    assert tiny_builders == [(cfg.model, cfg.checkpoint)]
    assert gen.device == "cpu" and "cpu" in gen.describe()
    assert gen.generator.params.decode_batch <= 64  # CPU caps the decoder batch
    images = [Image.new("RGB", (400, 300), (40, 90, 160)), Image.new("RGB", (300, 420), (200, 50, 50))]
    out = gen.generate(images)
    assert len(out) == 2 and all(isinstance(m, MaskSet) for m in out)
    for img, masks in zip(images, out):
        assert len(masks) >= 1
        assert (masks.boxes[:, 2] <= img.width).all() and (masks.boxes[:, 3] <= img.height).all()
        assert (masks.areas > 0).all() and masks.scores.shape == masks.areas.shape


def test_checkpoint_errors_are_clear(tmp_path):
    from curate.amg.build import resolve_checkpoint

    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(str(tmp_path / "missing.pt"))


def test_min_mask_region_area_other_than_zero_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SamConfig(backend="sam", checkpoint="x", min_mask_region_area=100)


def test_table10_params_reach_the_generator(tiny_builders):
    cfg = EfficientVitSamConfig(backend="efficientvit_sam", checkpoint="evit.pt")
    params = masks_sam.amg_params(cfg, "cuda")
    assert (params.points_per_side, params.crop_n_layers, params.pred_iou_thresh,
            params.stability_score_thresh, params.decode_batch) == (24, 1, 0.6, 0.85, 576)
    assert np.isclose(params.crop_overlap_ratio, 512 / 1500)


def test_decoder_is_compiled_only_on_the_gpu_and_when_asked(tiny_builders):
    cfg = EfficientVitSamConfig(backend="efficientvit_sam", checkpoint="evit.pt", compile_decoder=True)
    assert masks_sam.amg_params(cfg, "cuda").compile_decoder
    assert not masks_sam.amg_params(cfg, "cpu").compile_decoder
    assert not masks_sam.amg_params(cfg.model_copy(update={"compile_decoder": False}), "cuda").compile_decoder


def test_stand_in_masks_are_smooth_regions_and_say_so(monkeypatch):
    from curate.testing.tiny_sam import tiny_efficientvit_sam

    monkeypatch.setattr(masks_sam, "build_efficientvit_sam", lambda variant, checkpoint=None: tiny_efficientvit_sam())
    cfg = EfficientVitSamConfig(backend="efficientvit_sam", model="l0", checkpoint="random", points_per_side=4,
                                crop_n_layers=0, stand_in_masks=True)
    gen = backends.build(cfg)
    assert "stand-in masks" in gen.describe()
    # two flat colours side by side: every region stays within its half
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    image[:, :200] = (40, 90, 160)
    image[:, 200:] = (220, 200, 30)
    [masks] = gen.generate([Image.fromarray(image)])
    assert len(masks) >= 2
    assert ((masks.boxes[:, 2] <= 200) | (masks.boxes[:, 0] >= 200)).all()


def test_a_relative_checkpoint_is_read_from_the_drivers_folder_on_a_worker(tiny_builders, tmp_path, monkeypatch):
    from curate.io.fs import DRIVER_CWD_ENV

    (tmp_path / "driver" / "checkpoints").mkdir(parents=True)
    (tmp_path / "driver" / "checkpoints" / "evit.pt").write_bytes(b"weights")
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "worker")  # a Ray worker on another machine: a folder of its own
    monkeypatch.setenv(DRIVER_CWD_ENV, str(tmp_path / "driver"))
    backends.build(EfficientVitSamConfig(backend="efficientvit_sam", model="l0", checkpoint="checkpoints/evit.pt"))
    assert tiny_builders == [("l0", str(tmp_path / "driver" / "checkpoints" / "evit.pt"))]
