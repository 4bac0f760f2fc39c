"""The candidate table (curate/amg/candidates.py) and its Triton kernel (triton_candidates.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.amg.candidates import COLUMN, WIDTH, CropPlacement, Filters, candidate_rows_torch

# a 400 x 300 image; its crop (100, 50)-(300, 250); NMS offsets in units of 401
CROP = CropPlacement(index=3, box=(100, 50, 300, 250), image=2, image_box=(0, 0, 400, 300), nms_unit=401)


def stats_row(high: int, low: int, area: int, box: tuple[int, int, int, int]) -> list[int]:
    return [high, low, area, *box]


def test_rows_place_masks_in_the_image_and_filter_them():
    stats = torch.tensor([
        stats_row(90, 100, 95, (40, 40, 80, 90)),  # inside: kept
        stats_row(90, 100, 95, (40, 40, 195, 90)),  # right edge 295 within 20 px of the crop's 300: cut
        stats_row(50, 100, 80, (40, 40, 80, 90)),  # stability 0.5
        stats_row(0, 0, 0, (0, 0, 0, 0)),  # empty
    ])
    iou = torch.tensor([0.9, 0.9, 0.9, 0.5])
    points = torch.tensor([[7.5, 9.5], [30.0, 40.0]], dtype=torch.float64)  # two prompts, two masks each
    table, ok = candidate_rows_torch(stats, iou, points, 2, CROP, Filters(iou=0.6, stability=0.8))
    assert table.shape == (4, WIDTH) and table.dtype == torch.float64
    assert ok.tolist() == [True, False, False, False]
    assert table[0, COLUMN["image_box"]].tolist() == [140, 90, 180, 140]
    assert table[0, COLUMN["box"]].tolist() == [40, 40, 80, 90]
    assert table[:, COLUMN["point_xy"]].tolist() == [[107.5, 59.5], [107.5, 59.5], [130.0, 90.0], [130.0, 90.0]]
    assert table[2, COLUMN["stability"]] == 0.5 and table[3, COLUMN["stability"]] == 0
    assert table[0, COLUMN["nms_box"]].tolist() == [40 + 3 * 401, 40 + 3 * 401, 80 + 3 * 401, 90 + 3 * 401]
    assert table[0, COLUMN["nms_image_box"]].tolist() == [140 + 802, 90 + 802, 180 + 802, 140 + 802]
    assert table[0, COLUMN["crop_score"]] == np.float32(1 / 40000)
    assert (table[:, COLUMN["crop"]] == 3).all() and (table[:, COLUMN["image"]] == 2).all()
    assert table[:, COLUMN["crop_box"]].tolist() == [[100, 50, 300, 250]] * 4


def test_crop_edges_that_are_image_edges_do_not_filter():
    # a crop touching the image's left and top edges: a mask there is whole, not cut
    crop = CropPlacement(0, (0, 0, 200, 150), 0, (0, 0, 400, 300), 401)
    stats = torch.tensor([stats_row(10, 10, 10, (0, 0, 30, 30)), stats_row(10, 10, 10, (0, 0, 30, 140))])
    _, ok = candidate_rows_torch(stats, torch.ones(2), torch.zeros((2, 2), dtype=torch.float64), 1, crop,
                                 Filters(0.0, 0.0))
    assert ok.tolist() == [True, False]  # the second reaches y = 140, 10 px from the crop's bottom at 150


def random_accumulators(n: int, generator: torch.Generator) -> torch.Tensor:
    """int32 (n, 7) as the statistics kernel leaves them: empty masks keep neutral box corners."""
    from curate.amg.triton_stats import empty_stats

    acc = empty_stats(n, torch.device("cpu"))
    area = torch.randint(0, 5000, (n,), generator=generator) * (torch.rand(n, generator=generator) > 0.2)
    low = area + torch.randint(0, 200, (n,), generator=generator)
    high = (area - torch.randint(0, 200, (n,), generator=generator)).clamp_min(0)
    x0 = torch.randint(0, 190, (n,), generator=generator)
    y0 = torch.randint(0, 190, (n,), generator=generator)
    x1 = (x0 + torch.randint(0, 60, (n,), generator=generator)).clamp_max(199)
    y1 = (y0 + torch.randint(0, 60, (n,), generator=generator)).clamp_max(199)
    filled = area > 0
    acc[:, 0], acc[:, 1], acc[:, 2] = high, low * (area > 0), area
    for k, v in zip(range(3, 7), (x0, y0, x1, y1)):
        acc[filled, k] = v[filled].int()
    return acc


@pytest.mark.parametrize("filters", [Filters(0.6, 0.85), Filters(0.0, 0.0), Filters(0.88, 0.0)],
                         ids=["table10", "off", "iou_only"])
def test_triton_kernel_equals_torch_form(triton_runs, filters):
    from curate.amg.triton_candidates import candidate_rows_triton
    from curate.amg.triton_stats import finish_stats

    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    n, per_prompt = 300, 3
    acc = random_accumulators(n, g)
    iou = torch.rand(n, generator=g) * 0.5 + 0.5
    points = torch.rand((n // per_prompt, 2), generator=g, dtype=torch.float64) * 200
    table, ok = candidate_rows_torch(finish_stats(acc), iou, points, per_prompt, CROP, filters)
    fused_table, fused_ok = candidate_rows_triton(acc.to(device), iou.to(device), points.to(device), per_prompt,
                                                  CROP, filters)
    assert 0 < int(ok.sum()) < n
    assert torch.equal(fused_ok.cpu(), ok)
    assert torch.equal(fused_table.cpu(), table)
