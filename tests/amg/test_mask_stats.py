"""The fused mask-statistics kernel gives the references' numbers (torch path) for every mask.

Without a GPU the Triton kernel runs under Triton's interpreter (TRITON_INTERPRET=1), which
executes the same kernel code with numpy: the logic (tile skipping, interpolation indices, box
reduction) is checked here; tests/amg/test_gpu.py runs it compiled on CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.amg.mask_stats import mask_stats, stats_from_logits, upscale_logits
from curate.testing.tiny_sam import make_confident, tiny_sam

pytest.importorskip("triton")


@pytest.fixture
def triton_stats(triton_runs):
    """The kernel module: compiled on CUDA, interpreted on the CPU (tests/conftest.py)."""
    import curate.amg.triton_stats as module

    return module


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def blobs(n: int, seed: int, sharpness: float) -> torch.Tensor:
    """Low-res logits with a few blobs each (boxes well inside the frame), of given edge sharpness."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    out = torch.full((n, 256, 256), -2.0)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx = torch.rand(2, generator=g) * 200 + 28
            r = float(torch.rand(1, generator=g)) * 30 + 3
            out[i] = torch.maximum(out[i], (r - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()) * sharpness / r)
    return out


def assert_same_statistics(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal up to pixels within float32 rounding of a threshold (the kernel sums in another order):
    counts within 0.01% + 2 pixels, box corners within 1 pixel."""
    counts, boxes = ours[:, :3], ours[:, 3:]
    tolerance = 2 + reference[:, :3] // 10000
    assert ((counts - reference[:, :3]).abs() <= tolerance).all(), (ours, reference)
    assert ((boxes - reference[:, 3:]).abs() <= 1).all(), (ours, reference)


CASES = {
    # crop sizes of a 2048x1536 image (full frame, a layer-1 crop), a small image, odd shapes; blob
    # edges soft (many pixels between the stability thresholds) or as sharp as confident masks'
    "2k_crops_sharp": ([(1536, 2048), (1030, 1285)], 300.0),
    "small_image_soft": ([(300, 400), (200, 263)], 1.5),
    "small_image_sharp": ([(300, 400), (200, 263)], 300.0),
    "tall_and_tiny_soft": ([(97, 61), (700, 33), (5, 9)], 1.5),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.startswith("2k") else c
                                  for c in sorted(CASES)])
def test_kernel_equals_reference_arithmetic(triton_stats, case):
    shapes, sharpness = CASES[case]
    low = blobs(len(shapes) + 2, seed=len(case), sharpness=sharpness)
    low[0] = 5.0  # wholly inside: every tile skipped as full
    # within the skipping margin of both stability thresholds: every tile evaluated pixel by pixel
    low[1] = torch.where(low[1] > 0, 1.0 + 1e-4, -1.0 - 1e-4)
    hws = torch.tensor([shapes[i % len(shapes)] for i in range(len(low))])
    low, hws = low.to(device()), hws.to(device())
    ours = triton_stats.mask_stats_triton(low, hws, 1024, 0.0, 1.0).cpu()
    reference = mask_stats(low, hws, 1024, 0.0, 1.0, backend="torch").cpu()
    assert_same_statistics(ours, reference)
    assert (reference[:, 2] > 0).sum() >= 2 and (reference[:, 5] > reference[:, 3]).any()


def test_tile_classification_stops_on_noise_and_resumes(triton_stats):
    """Noise on the left of the frame (every tile straddles the thresholds, so the kernel stops
    classifying tiles after a run of them), then inside, then outside the mask on the right (it must
    classify again to skip those): the same statistics as the references' arithmetic, and as the
    kernel with classification always on or never on."""
    g = torch.Generator().manual_seed(5)
    low = torch.empty((2, 256, 256))
    low[:, :, :150] = torch.randn((2, 256, 150), generator=g) * 3
    low[0, :, 150:] = 4.0
    low[1, :, 150:] = -4.0
    low[1, :, 200:] = 4.0
    low = low.to(device())
    hw = (130, 2048)  # 32 tiles per band, two bands
    hws = torch.tensor([hw, hw], device=device())
    reference = mask_stats(low, hws, 1024, 0.0, 1.0, backend="torch").cpu()

    def kernel(**tuning):
        out = triton_stats.empty_stats(2, low.device)
        triton_stats.stats_one_size(low, hw, 1024, 0.0, 1.0, out, **tuning)
        return triton_stats.finish_stats(out).cpu()

    ours = kernel()
    assert_same_statistics(ours, reference)
    assert torch.equal(ours, kernel(CLASSIFY_RUN=10**6))
    assert torch.equal(ours, kernel(CLASSIFY_RUN=0, CLASSIFY_EVERY=10**6))
    assert (reference[:, 2] > hw[0] * 600).all()  # the right-hand side counts


def test_split_products(triton_stats):
    """The GPU's float32 path (operands split for three TF32 products, computed exactly here) gives
    the same statistics."""
    shapes, sharpness = CASES["small_image_soft"]
    low = blobs(7, seed=3, sharpness=sharpness).to(device())
    hws = torch.tensor([shapes[i % 2] for i in range(7)], device=device())
    reference = mask_stats(low, hws, 1024, 0.0, 1.0, backend="torch").cpu()
    ours = triton_stats.mask_stats_triton(low, hws, 1024, 0.0, 1.0, precision="tf32x3").cpu()
    assert_same_statistics(ours, reference)
    assert (reference[:, 2] > 0).sum() >= 5


@pytest.mark.parametrize("shape", [(300, 400), (130, 700)])
def test_half_tally_counts_float16_comparisons(triton_stats, shape):
    """The half-precision tally (float16 comparisons summed on tensor cores) gives the statistics
    of the references' logits rounded to float16; soft edges put many pixels near the thresholds,
    where float32 and float16 comparisons part."""
    low = blobs(4, seed=6, sharpness=1.5)
    low[3] = torch.randn((256, 256), generator=torch.Generator().manual_seed(6)) * 3  # noise: no tile skipped
    low = low.to(device())
    full = upscale_logits(low, shape, 1024)
    half_reference = stats_from_logits(full.half().float(), 0.0, 1.0).cpu()
    out = triton_stats.empty_stats(len(low), low.device)
    triton_stats.stats_one_size(low, shape, 1024, 0.0, 1.0, out, HALF_TALLY=True)
    ours = triton_stats.finish_stats(out).cpu()
    assert_same_statistics(ours, half_reference)
    exact = stats_from_logits(full, 0.0, 1.0).cpu()
    assert (half_reference[:, :3] != exact[:, :3]).any()  # the two roundings differ on these masks


@pytest.mark.parametrize("case", [pytest.param("2k_crops_sharp", marks=pytest.mark.slow), "small_image_soft"])
def test_float16_products_on_bfloat16_logits(triton_stats, case):
    """Half-precision runs' defaults on the GPU (interpolation products of float16 operands, the
    float16 tally): the references' statistics of the same bfloat16 logits rounded to float16,
    up to the products' rounding."""
    shapes, sharpness = CASES[case]
    low = blobs(6, seed=11, sharpness=sharpness).to(torch.bfloat16).to(device())
    hws = torch.tensor([shapes[i % len(shapes)] for i in range(len(low))], device=device())
    half_reference = torch.cat([stats_from_logits(upscale_logits(low[i:i + 1], tuple(hws[i].tolist()), 1024)
                                                  .half().float(), 0.0, 1.0) for i in range(len(low))]).cpu()
    ours = triton_stats.mask_stats_triton(low, hws, 1024, 0.0, 1.0, precision="fp16").cpu()
    assert_same_statistics(ours, half_reference)
    assert (half_reference[:, 2] > 0).sum() >= 4


def test_half_pairs_only_for_thresholds_float16_holds(triton_stats):
    assert triton_stats._half_pair(1.0) == 0x3C003C00
    assert triton_stats._half_pair(-1.0) == np.uint32(0xBC00BC00).view(np.int32)
    assert triton_stats._half_pair(0.95) is None


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_masks_not_kept_are_skipped_with_one_crop_size(triton_stats, backend):
    """One (height, width) for all masks and a keep flag: kept masks get the statistics of the
    per-mask call, the others zeros (the kernel never reads them: their logits are NaN here)."""
    low = blobs(6, seed=4, sharpness=300.0).to(device())
    keep = torch.tensor([True, False, True, True, False, True], device=device())
    low[~keep] = float("nan")
    hw = (410, 400)  # square-ish: every blob lies inside the crop
    ours = mask_stats(low, hw, 1024, 0.0, 1.0, backend=backend, keep=keep).cpu()
    expected = mask_stats(low[keep], torch.tensor([hw] * 4, device=device()), 1024, 0.0, 1.0, backend="torch").cpu()
    assert_same_statistics(ours[keep.cpu()], expected)
    assert (ours[~keep.cpu()] == 0).all()
    assert (expected[:, 2] > 0).all()


def test_empty_masks_have_zero_boxes(triton_stats):
    low = torch.full((2, 256, 256), -3.0, device=device())
    hws = torch.tensor([[300, 400], [1536, 2048]], device=device())
    out = triton_stats.mask_stats_triton(low, hws, 1024, 0.0, 1.0)
    assert out.cpu().tolist() == [[0] * 7, [0] * 7]


def test_torch_statistics_match_a_direct_count():
    low = blobs(3, seed=1, sharpness=2.0)
    full = upscale_logits(low, (310, 300), 1024)
    stats = stats_from_logits(full, 0.0, 1.0)
    for i in range(3):
        mask = (full[i] > 0).numpy()
        ys, xs = np.nonzero(mask)
        assert stats[i, 2] == mask.sum()
        assert stats[i, 0] == (full[i] > 1).sum() and stats[i, 1] == (full[i] > -1).sum()
        assert stats[i, 3:].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_upscale_is_the_references_postprocessing():
    from segment_anything.modeling import Sam

    low = blobs(2, seed=2, sharpness=3.0)
    sam = tiny_sam().net
    reference = Sam.postprocess_masks(sam, low[:, None], (768, 1024), (150, 200))[:, 0]
    assert torch.equal(upscale_logits(low, (150, 200), 1024), reference)


@pytest.mark.slow  # a whole generator run with interpreted kernels
def test_generator_gives_the_same_masks_with_either_statistics_backend(triton_stats):
    from PIL import Image
    from skimage import data

    image = np.asarray(Image.fromarray(data.astronaut()).resize((160, 120)))
    model = make_confident(tiny_sam(seed=0), iou_bias=0.0).to(device())
    params = AmgParams(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5, box_nms_thresh=1.0,
                       crop_nms_thresh=1.0, decode_batch=64)
    results = {}
    for backend in ("torch", "triton"):
        [results[backend]] = BatchedMaskGenerator(model, params, return_masks=True, stats_backend=backend) \
            .generate([image])
    a, b = results["torch"], results["triton"]
    assert len(a.boxes) > 5
    assert len(a.boxes) == len(b.boxes)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1)
    np.testing.assert_allclose(a.areas, b.areas, rtol=1e-4, atol=2)
    np.testing.assert_allclose(a.stability, b.stability, atol=1e-3)
    np.testing.assert_array_equal(a.masks, b.masks)  # materialised the same way for both
    assert np.array_equal(a.masks.sum(axis=(1, 2)), a.areas)


def test_negative_stability_offset_is_refused(triton_stats):
    """The kernel nests its three thresholds (low <= mask <= high); a negative offset would break
    that order silently, so it is refused by name."""
    low = blobs(1, seed=5, sharpness=2.0).to(device())
    with pytest.raises(ValueError, match="offset must be >= 0"):
        triton_stats.mask_stats_triton(low, torch.tensor([[300, 400]], device=device()), 1024, 0.0, -1.0)
    with pytest.raises(ValueError, match="stability_score_offset must be >= 0"):
        AmgParams(stability_score_offset=-1.0)
