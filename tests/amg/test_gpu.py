"""Full-size SAM and EfficientViT-SAM on the GPU: parity with the reference generators at PS3
Table 10 settings (random weights made confident), and the bf16 path. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.amg.build import build_efficientvit_sam, build_sam
from curate.testing.parity import compare, reference_arrays
from curate.testing.tiny_sam import make_confident
from tests.conftest import gpu_only

pytestmark = gpu_only()

TABLE10 = dict(points_per_side=24, points_per_batch=128, crop_n_layers=1, crop_n_points_downscale_factor=1,
               pred_iou_thresh=0.6, stability_score_thresh=0.85, min_mask_region_area=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((1024, 768), Image.Resampling.LANCZOS))


# Random decoders give masks that hardly depend on the point, so NMS leaves about one per image at
# Table 10; the NMS-off settings keep every mask that passes the filters (hundreds) and compare them all.
SETTINGS = {
    "table10": TABLE10,
    "nms_off": dict(TABLE10, points_per_side=8, box_nms_thresh=1.0, crop_nms_thresh=1.0),
}


@pytest.mark.parametrize("settings", sorted(SETTINGS))
@pytest.mark.parametrize("family, variant", [("evit", "xl1"), ("evit", "l0"), ("sam", "vit_b")])
def test_full_size_parity_with_reference(image, family, variant, settings):
    torch.manual_seed(0)
    model = build_sam(variant) if family == "sam" else build_efficientvit_sam(variant)
    model = make_confident(model).to("cuda", torch.float32)
    if family == "sam":
        from segment_anything import SamAutomaticMaskGenerator as Ref
    else:
        from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator as Ref
    anns = Ref(model.net, output_mode="binary_mask", **SETTINGS[settings]).generate(image)
    [ours] = BatchedMaskGenerator(model, AmgParams(**SETTINGS[settings]), return_masks=True).generate([image])
    report = compare(*reference_arrays(anns), ours.masks, ours.boxes, device="cuda")
    print(family, variant, settings, report)
    assert report.n_reference >= (1 if settings == "table10" else 100)
    assert report.ok, report


def test_bf16_runs_and_keeps_most_fp32_masks(image):
    torch.manual_seed(0)
    model = make_confident(build_efficientvit_sam("xl1")).to("cuda", torch.float32)
    params = AmgParams(**SETTINGS["nms_off"])
    [fp32] = BatchedMaskGenerator(model, params, return_masks=True).generate([image])
    model.to("cuda", torch.bfloat16)
    [bf16] = BatchedMaskGenerator(model, params, return_masks=True).generate([image])
    report = compare(fp32.masks, fp32.boxes, bf16.masks, bf16.boxes, device="cuda")
    print("bf16 vs fp32", report)
    # half precision moves masks at the thresholds; most must survive with the same shape (94% at
    # IoU >= 0.99 on the H100; 0.5 let a miscompiled attention kernel through)
    assert abs(report.n_ours - report.n_reference) <= max(2, 0.2 * report.n_reference)
    assert report.frac_iou_ge_099 >= 0.85


def test_compiled_decoder_keeps_the_eager_masks(image):
    """torch.compile of the decoder (masks.compile_decoder) fuses the same arithmetic in another
    order: in bf16 the masks must stay those of the eager decoder."""
    torch.manual_seed(0)
    model = make_confident(build_efficientvit_sam("xl1")).to("cuda", torch.bfloat16)
    results = {}
    for compiled in (False, True):
        params = AmgParams(**SETTINGS["nms_off"], compile_decoder=compiled)
        [results[compiled]] = BatchedMaskGenerator(model, params, return_masks=True).generate([image])
    report = compare(results[False].masks, results[False].boxes, results[True].masks, results[True].boxes,
                     device="cuda")
    print("compiled vs eager", report)
    assert report.n_reference >= 100
    assert abs(report.n_ours - report.n_reference) <= max(2, 0.05 * report.n_reference)
    assert report.frac_iou_ge_099 >= 0.9
