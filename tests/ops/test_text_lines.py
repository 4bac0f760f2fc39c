"""Text-line regions: whole lines, one column per block, spread over the page, never nested."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.ops.text_lines import group_lines, spread_picks, text_line_regions


def page_lines(rows: int, x0: float = 100, width: float = 800, top: float = 100, h: float = 30,
               step: float = 48) -> np.ndarray:
    return np.array([[x0, top + i * step, x0 + width, top + i * step + h] for i in range(rows)], dtype=float)


def contained(a, b) -> float:
    """Share of the smaller box inside the other."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small


def test_blocks_follow_a_column_and_never_jump_to_the_next():
    left, right = page_lines(6, x0=100, width=700), page_lines(6, x0=1000, width=700)
    boxes = np.concatenate([left, right])
    blocks = group_lines(boxes, lines_per_region=3)
    assert sorted(len(b) for b in blocks) == [3, 3, 3, 3]
    for block in blocks:
        assert len({int(boxes[i, 0]) for i in block}) == 1  # one column
        tops = [boxes[i, 1] for i in block]
        assert tops == sorted(tops) and np.all(np.diff(tops) == 48)  # consecutive lines, top to bottom


def test_a_wide_gap_ends_a_block():
    boxes = np.concatenate([page_lines(2), page_lines(2, top=600)])
    assert sorted(len(b) for b in group_lines(boxes, lines_per_region=4)) == [2, 2]


@pytest.mark.parametrize("lines", [1, 2, 3])
def test_a_sparse_page_gets_a_region_per_line(lines):
    boxes = page_lines(lines, step=400)
    picked = text_line_regions(boxes, 2480, 3508, max_boxes=4)
    assert len(picked) == lines
    assert [members for _, members in picked] == [[i] for i in range(lines)]


def test_regions_spread_from_the_first_line_to_the_last():
    boxes = page_lines(40)
    picked = text_line_regions(boxes, 2480, 3508, max_boxes=4)
    members = [m[0] for _, m in picked]
    assert members[0] == 0 and members[-1] == 39 and len(set(members)) == 4
    assert min(np.diff(members)) >= 10  # not four neighbours


def test_regions_are_line_shaped_and_hold_the_whole_line():
    boxes = page_lines(3, h=30)
    for region, [i] in text_line_regions(boxes, 2480, 3508, max_boxes=4):
        x0, y0, x1, y1 = region.box
        assert x0 <= boxes[i, 0] and y0 <= boxes[i, 1] and x1 >= boxes[i, 2] and y1 >= boxes[i, 3]
        assert y1 - y0 <= 1.3 * 30 + 2 and x1 - x0 >= 800


def test_specks_are_not_lines():
    boxes = np.array([[100, 100, 900, 130], [500, 800, 503, 803]], dtype=float)
    assert [m for _, m in text_line_regions(boxes, 2480, 3508, max_boxes=4)] == [[0]]
    assert text_line_regions(boxes[1:], 2480, 3508, max_boxes=4) == []


def test_spread_picks():
    assert spread_picks(3, 4) == [0, 1, 2]
    assert spread_picks(10, 4) == [0, 3, 6, 9]


line = st.tuples(st.integers(0, 2000), st.integers(0, 3300), st.integers(40, 900), st.integers(8, 80))


@settings(max_examples=60, deadline=None)
@given(st.lists(line, min_size=0, max_size=40), st.integers(1, 3))
def test_regions_hold_disjoint_lines_and_stay_in_the_page(raw, per_region):
    boxes = np.array([[x, y, min(x + w, 2480), min(y + h, 3508)] for x, y, w, h in raw], dtype=float).reshape(-1, 4)
    picked = text_line_regions(boxes, 2480, 3508, max_boxes=6, lines_per_region=per_region)
    members = [i for _, m in picked for i in m]
    assert len(members) == len(set(members))  # a line is in one region at most
    assert len(picked) <= 6 and all(len(m) <= per_region for _, m in picked)
    for region, m in picked:
        x0, y0, x1, y1 = region.box
        assert 0 <= x0 < x1 <= 2480 and 0 <= y0 < y1 <= 3508
        for i in m:  # each member line lies inside its region
            assert x0 <= boxes[i, 0] + 1 and y0 <= boxes[i, 1] + 1 and x1 >= boxes[i, 2] - 1 and y1 >= boxes[i, 3] - 1
