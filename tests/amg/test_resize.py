"""The torch form of Pillow's bilinear resize equals Pillow's, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from curate.amg.resize import pil_resize_bilinear

SHAPES = [((300, 400), (48, 64)), ((90, 100), (58, 64)), ((40, 50), (51, 64)), ((65, 30), (64, 30)),
          ((37, 123), (37, 61))]


def pillow(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("shape,resized", SHAPES)
def test_equals_pillow(shape, resized):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = pil_resize_bilinear(torch.from_numpy(image), *resized)
    assert ours.dtype == torch.float32 and ours.shape == (3, *resized)
    np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy().astype(np.uint8), pillow(image, *resized))
