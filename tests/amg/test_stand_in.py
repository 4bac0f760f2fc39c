"""The realistic-mask stand-in for a trained SAM: smooth nested regions, the same masks from our
generator and the reference generator, a trained model's survivor count on a natural photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.amg.stand_in import (
    CHANNELS,
    make_segmenting,
    pack_colours,
    region_logits,
    unpack_colours,
)
from curate.testing.parity import compare, reference_arrays
from curate.testing.tiny_sam import tiny_efficientvit_sam, tiny_sam


def two_colour_crop(side: int = 256) -> torch.Tensor:
    """(3, side, side): a left half of one colour, a right half of another."""
    colours = torch.zeros(3, side, side)
    colours[:, :, side // 2:] = torch.tensor([1.5, -1.0, 0.5])[:, None, None]
    return colours


def test_colours_survive_the_trip_through_the_embedding():
    images = torch.randn(2, 3, 1024, 1024)
    packed = pack_colours(images)
    assert packed.shape == (2, CHANNELS, 64, 64)
    expected = torch.nn.functional.avg_pool2d(images, 4)[1]
    assert torch.allclose(unpack_colours(packed[1:2]), expected, atol=1e-6)


def test_regions_follow_colour_and_nest_by_scale():
    colours = two_colour_crop()
    points = torch.tensor([[40.0, 128.0], [200.0, 60.0]])
    logits, iou = region_logits(colours, points)
    assert logits.shape == (2, 3, 256, 256) and iou.shape == (2, 3)
    inside = logits > 0
    assert inside[0, :, 128, 40].all() and inside[1, :, 60, 200].all()  # each region holds its point
    assert not inside[0, :, :, 128:].any() and not inside[1, :, :, :128].any()  # and stops at the colour edge
    assert (inside[:, 0] <= inside[:, 1]).all() and (inside[:, 1] <= inside[:, 2]).all()  # part, object, region
    assert inside[:, 0].sum() < inside[:, 2].sum()
    assert torch.unique(iou).numel() == iou.numel()  # no ties for NMS to break differently


def test_regions_do_not_depend_on_how_points_are_batched():
    colours = torch.randn(3, 256, 256)
    points = torch.rand(10, 2) * 256
    together, iou = region_logits(colours, points)
    apart = [region_logits(colours, points[i:i + 3]) for i in range(0, 10, 3)]
    assert torch.equal(together, torch.cat([a[0] for a in apart]))
    assert torch.equal(iou, torch.cat([a[1] for a in apart]))


def test_a_narrow_embedding_is_refused():
    with pytest.raises(ValueError, match="48 channels"):
        make_segmenting(tiny_sam(embed_dim=32))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((400, 300)))


@pytest.mark.slow  # the reference generator on CPU
def test_ours_and_the_reference_keep_the_same_smooth_masks(photo):
    from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator

    settings = dict(points_per_side=6, crop_n_layers=1, pred_iou_thresh=0.6, stability_score_thresh=0.85)
    model = make_segmenting(tiny_efficientvit_sam())
    reference = EfficientViTSamAutomaticMaskGenerator(model.net, points_per_batch=32, output_mode="binary_mask",
                                                      **settings)
    ref_masks, ref_boxes = reference_arrays(reference.generate(photo))
    [ours] = BatchedMaskGenerator(model, AmgParams(decode_batch=40, **settings), return_masks=True).generate([photo])
    report = compare(ref_masks, ref_boxes, ours.masks, ours.boxes)
    assert report.n_reference >= 20, report  # several smooth masks survive, not one noise mask
    assert report.ok, report
    # smooth: a mask's boundary is short for its area, where a noise mask's is about its area
    edges = np.abs(np.diff(ours.masks.astype(np.int8), axis=2)).sum((1, 2))
    assert np.median(edges / ours.masks.sum((1, 2))) < 0.2
