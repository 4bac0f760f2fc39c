import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.train.slicing import depth_to_space, factor_pairs, slice_boxes, space_to_depth, uhd_partition


@pytest.mark.parametrize("size, expected", [
    ((336, 336), (1, 1)),      # N = 1
    ((1088, 672), (3, 2)),     # N = 7 -> 6 = 3x2 gives slices 363x336 (log-ratio 0.08)
    ((672, 1088), (2, 3)),     # transposed
    ((1000, 6000), (3, 18)),   # 1:6, N = 54 = 3x18: 333x333 slices, exactly square
    ((6000, 1000), (18, 3)),   # 6:1
    ((700, 350), (2, 1)),      # N = 3 -> 2 = 2x1: 350x350 slices
])
def test_uhd_partition_hand_worked(size, expected):
    assert uhd_partition(*size) == expected


def test_uhd_partition_scores_candidates_from_n_minus_1_to_n_plus_1():
    # 1008x336, N = 3: candidates 2 (1x2, 2x1), 3 (1x3, 3x1), 4 (...). 3x1 gives 336x336 exactly.
    assert uhd_partition(1008, 336) == (3, 1)
    assert factor_pairs(6) == [(1, 6), (2, 3), (3, 2), (6, 1)]


@settings(max_examples=200, deadline=None)
@given(w=st.integers(50, 8000), h=st.integers(50, 8000))
def test_partition_count_is_near_ideal_and_slices_tile_the_image(w, h):
    m, n = uhd_partition(w, h)
    ideal = math.ceil(w * h / 336 ** 2)
    assert (m, n) == (1, 1) if ideal <= 1 else abs(m * n - ideal) <= 1
    boxes = slice_boxes(w, h, m, n)
    assert len(boxes) == m * n
    assert sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes) == w * h
    assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == (w, h)


def test_extreme_aspect_slices_stay_close_to_the_vit_aspect():
    for w, h in ((1000, 6000), (6000, 1000), (672, 4032), (4032, 672)):
        m, n = uhd_partition(w, h)
        assert abs(math.log((w / m) / (h / n))) < 0.2


def test_space_to_depth_is_lossless_and_groups_2x2_blocks():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    y = space_to_depth(x)
    assert y.shape == (2, 12, 2, 3)
    assert torch.equal(y[0, :4, 0, 0], torch.tensor([0.0, 1.0, 6.0, 7.0]))  # channel 0's top-left block
    assert torch.equal(depth_to_space(y), x)
    with pytest.raises(ValueError, match="divisible"):
        space_to_depth(torch.zeros(1, 3, 5))
