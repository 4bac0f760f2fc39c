"""Our batched generator gives the reference generators' masks (same weights, same settings).

Tiny randomly initialised models of the real architectures run on the CPU here; the full-size
models run the same comparison on the GPU machine (benchmarks/amg.py --parity).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.testing.parity import compare, reference_arrays
from curate.testing.tiny_sam import make_confident, tiny_efficientvit_sam, tiny_sam


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((400, 300)))


def sharpened_tiny_sam(seed: int = 0):
    """Random init gives logits near 0 (nothing passes a stability threshold): make_confident
    scales them without changing the code path. IoU predictions stay raw (filters set per test)."""
    return make_confident(tiny_sam(seed=seed), iou_bias=0.0)


def run_both(model, image, reference=None, **settings):
    if reference is None:
        from segment_anything import SamAutomaticMaskGenerator as reference

    ref = reference(model.net, points_per_batch=64, output_mode="binary_mask", **settings)
    ref_masks, ref_boxes = reference_arrays(ref.generate(image))
    [ours] = BatchedMaskGenerator(model, AmgParams(decode_batch=96, **settings), return_masks=True).generate([image])
    return compare(ref_masks, ref_boxes, ours.masks, ours.boxes), ours


@pytest.mark.slow  # the reference generator on CPU
def test_every_mask_matches_with_filters_and_nms_off(image):
    # No IoU/stability filter and NMS that suppresses nothing: every prompt's masks reach the
    # output (hundreds), so thresholding, boxes, crop-edge filter and uncropping are all compared.
    report, ours = run_both(sharpened_tiny_sam(), image, points_per_side=8, crop_n_layers=1,
                            pred_iou_thresh=0.0, stability_score_thresh=0.0,
                            box_nms_thresh=1.0, crop_nms_thresh=1.0)
    assert report.n_reference >= 50
    assert report.ok, report
    assert (ours.areas == ours.masks.reshape(len(ours.masks), -1).sum(1)).all()


@pytest.mark.slow  # the reference generator on CPU
def test_efficientvit_sam_matches_its_reference_generator(image):
    from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator

    model = make_confident(tiny_efficientvit_sam(), iou_bias=0.0)
    report, _ = run_both(model, image, EfficientViTSamAutomaticMaskGenerator, points_per_side=6, crop_n_layers=1,
                         pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0, crop_nms_thresh=1.0)
    assert report.n_reference >= 50
    assert report.ok, report


@pytest.mark.slow  # the reference generator on CPU
def test_matches_reference_with_table10_thresholds(image):
    report, _ = run_both(sharpened_tiny_sam(seed=1), image, points_per_side=8, crop_n_layers=1,
                         pred_iou_thresh=0.0, stability_score_thresh=0.85)
    assert report.n_reference >= 1
    assert report.ok, report


@pytest.mark.slow
@pytest.mark.parametrize("encode_batch", [5, 16], ids=["wave_per_image", "images_share_a_wave"])
def test_several_images_in_one_batch_equal_one_at_a_time(image, encode_batch):
    """Images go through in waves (the next wave's encoder queued behind this wave's decoder):
    one image per wave, or three images (15 crops) in one."""
    model = sharpened_tiny_sam()
    params = AmgParams(points_per_side=6, crop_n_layers=1, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                       box_nms_thresh=1.0, crop_nms_thresh=1.0, decode_batch=50, encode_batch=encode_batch)
    images = [image, np.ascontiguousarray(image[::-1, ::-1]), np.ascontiguousarray(image[40:250, 10:400])]
    gen = BatchedMaskGenerator(model, params)
    together = gen.generate(images)
    alone = [gen.generate([one])[0] for one in images]
    assert len(together) == 3
    for a, b in zip(together, alone):
        assert len(b.areas) > 0
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.areas, b.areas)
        assert np.array_equal(a.points, b.points)


def test_no_surviving_mask_is_an_empty_result_not_an_error(image):
    model = tiny_sam()  # unsharpened: nothing passes stability 0.85 (the references raise IndexError)
    [out] = BatchedMaskGenerator(model, AmgParams(points_per_side=4, crop_n_layers=1)).generate([image])
    assert len(out.areas) == 0 and out.boxes.shape == (0, 4)
