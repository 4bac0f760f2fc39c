"""The fused preprocessing kernel equals Pillow's resize followed by the references' normalisation
(float32, true division) and zero padding, on crops that are views of a larger image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.amg.models import PIXEL_MEAN, PIXEL_STD
from tests.amg.test_resize import SHAPES, pillow
from tests.conftest import apply_marks, gpu_only

SIZE = 64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # on the CPU: Triton's interpreter


def expected(crop: np.ndarray, height: int, width: int, size: int = SIZE) -> np.ndarray:
    resized = pillow(crop, height, width).astype(np.float32)
    normalised = (resized - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
    out = np.zeros((3, size, size), dtype=np.float32)
    out[:, :height, :width] = normalised.transpose(2, 0, 1)
    return out


@pytest.mark.parametrize("shape,resized", SHAPES)
def test_crop_view_equals_pillow_then_normalise(triton_runs, shape, resized):
    from curate.amg.triton_preprocess import resize_normalise_pad

    image = np.random.default_rng(1).integers(0, 256, (shape[0] + 7, shape[1] + 11, 3), dtype=np.uint8)
    crop = torch.from_numpy(image).to(DEVICE)[3:3 + shape[0], 5:5 + shape[1]]  # strided rows, as the generator's
    slot = torch.full((2, 3, SIZE, SIZE), float("nan"), device=DEVICE)[1]
    out = resize_normalise_pad(crop, *resized, SIZE, PIXEL_MEAN, PIXEL_STD, out=slot)
    assert out.data_ptr() == slot.data_ptr()
    np.testing.assert_array_equal(out.cpu().numpy(), expected(crop.cpu().numpy(), *resized))


@apply_marks(gpu_only("full-size crops: GPU only (slow under the interpreter)"))
@pytest.mark.parametrize("box", [(0, 0, 2048, 1536), (762, 506, 2048, 1536), (0, 0, 1286, 1030), (100, 50, 700, 650)])
def test_full_size_crops_of_a_2k_image(triton_runs, box):
    from curate.amg.grid import resized_shape
    from curate.amg.triton_preprocess import resize_normalise_pad

    image = np.random.default_rng(2).integers(0, 256, (1536, 2048, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    crop = torch.from_numpy(image).cuda()[y0:y1, x0:x1]
    height, width = resized_shape(y1 - y0, x1 - x0, 1024)
    out = resize_normalise_pad(crop, height, width, 1024, PIXEL_MEAN, PIXEL_STD)
    np.testing.assert_array_equal(out.cpu().numpy(), expected(image[y0:y1, x0:x1], height, width, 1024))


def test_rejects_what_it_cannot_resize(triton_runs):
    from curate.amg.triton_preprocess import resize_normalise_pad

    with pytest.raises(ValueError, match="uint8"):
        resize_normalise_pad(torch.zeros((8, 8, 3), device=DEVICE), 8, 8, SIZE, PIXEL_MEAN, PIXEL_STD)
    with pytest.raises(ValueError, match="must fit"):
        resize_normalise_pad(torch.zeros((8, 8, 3), dtype=torch.uint8, device=DEVICE), SIZE + 1, 8, SIZE, PIXEL_MEAN,
                             PIXEL_STD)


def test_column_taps_come_in_few_buckets_and_padding_weighs_nothing():
    from curate.amg.triton_preprocess import _dense_taps, tap_bucket

    assert [tap_bucket(k) for k in (1, 2, 3, 4, 5, 8, 9, 13)] == [1, 4, 4, 4, 8, 8, 12, 16]
    # every crop width a 1K-4K image gives, resized to the encoder's 1024: a handful of variants
    assert len({tap_bucket(_dense_taps(w, 1024, torch.device("cpu"))[2]) for w in range(1025, 4097, 7)}) <= 4
    index, weight, k = _dense_taps(3000, 1024, torch.device("cpu"))
    padded_index, padded_weight, padded_k = _dense_taps(3000, 1024, torch.device("cpu"), bucketed=True)
    assert padded_k == tap_bucket(k) > k
    assert torch.equal(padded_weight[:, :k], weight) and not padded_weight[:, k:].any()
    assert torch.equal(padded_index[:, :k], index)
