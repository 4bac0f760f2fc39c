"""Native-aspect views: grids keep the image's aspect, and box maps follow the same geometry exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from curate.train.data import native_view
from curate.train.geometry import area_grid, aspect_grid, box_in_slice, scale_grids, view_size
from curate.train.score_maps import box_score_map
from curate.train.slicing import slice_boxes


@pytest.mark.parametrize("width,height", [(600, 3600), (3600, 600), (4000, 3000), (1000, 1000)])
@pytest.mark.parametrize("long_side", [1512, 3780])
def test_grids_keep_the_aspect_within_a_patch(width, height, long_side):
    rows, cols = aspect_grid(width, height, long_side, 14)
    assert max(rows, cols) == long_side // 14
    assert abs(cols / rows - width / height) <= 1 / min(rows, cols) * (width / height) + 1e-9
    vw, vh = view_size(width, height, long_side, 14)
    assert (vw, vh) == (cols * 14, rows * 14)


def test_one_to_six_and_six_to_one_at_ps3_sizes():
    assert aspect_grid(600, 3600, 1512, 14) == (108, 18)
    assert aspect_grid(3600, 600, 1512, 14) == (18, 108)
    assert aspect_grid(600, 3600, 3780, 14) == (270, 45)
    assert scale_grids(3600, 600, 3780, [0.4, 1.0], 14) == [(18, 108), (45, 270)]


@pytest.mark.parametrize("width,height", [(600, 3600), (3600, 600)])
def test_a_box_covers_the_same_pixels_on_every_scale(width, height):
    """The patches a box map marks on a native-aspect grid are the image's pixels inside the box: the
    map's mass is the box's area in patches, and every marked patch overlaps the box in pixels."""
    box = (0.1, 0.35, 0.45, 0.4)
    for rows, cols in scale_grids(width, height, 3780, [0.4, 1.0], 14):
        covered = box_score_map(box, rows, cols)
        assert covered.sum() == pytest.approx((box[2] - box[0]) * (box[3] - box[1]) * rows * cols)
        for r, c in zip(*np.nonzero(covered)):
            # the patch's pixel rectangle, in the original image, overlaps the box's
            px0, px1 = c / cols * width, (c + 1) / cols * width
            py0, py1 = r / rows * height, (r + 1) / rows * height
            assert px1 > box[0] * width and px0 < box[2] * width
            assert py1 > box[1] * height and py0 < box[3] * height


def test_native_view_keeps_the_aspect_and_never_upscales():
    tall = Image.new("RGB", (600, 3600), (10, 20, 30))
    view = native_view(tall, 1512)
    assert view.dtype == torch.uint8 and tuple(view.shape) == (3, 1512, 252)
    small = native_view(Image.new("RGB", (100, 60)), 1512)
    assert tuple(small.shape) == (3, 60, 100)


@pytest.mark.parametrize("width,height", [(600, 3600), (3600, 600), (1000, 700)])
def test_area_grid_is_about_the_native_area_with_the_aspect(width, height):
    rows, cols = area_grid(width, height, 27)
    assert abs(rows * cols - 27 * 27) <= 27 * 2
    assert cols / rows == pytest.approx(width / height, rel=0.1)


def test_a_box_cut_by_slices_maps_back_to_itself():
    """box_in_slice on every slice of a grid, mapped back to image pixels, tiles the box exactly."""
    width, height, box = 3600, 600, (0.1, 0.2, 0.7, 0.9)
    area = 0.0
    for sx0, sy0, sx1, sy1 in slice_boxes(width, height, 6, 1):
        inner = box_in_slice(box, (sx0, sy0, sx1, sy1), width, height)
        if inner is None:
            assert sx1 <= box[0] * width or sx0 >= box[2] * width
            continue
        x0, y0 = sx0 + inner[0] * (sx1 - sx0), sy0 + inner[1] * (sy1 - sy0)
        x1, y1 = sx0 + inner[2] * (sx1 - sx0), sy0 + inner[3] * (sy1 - sy0)
        assert box[0] * width - 1e-6 <= x0 < x1 <= box[2] * width + 1e-6
        area += (x1 - x0) * (y1 - y0)
    assert area == pytest.approx((box[2] - box[0]) * width * (box[3] - box[1]) * height)
