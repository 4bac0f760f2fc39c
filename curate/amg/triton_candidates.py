"""Fused Triton kernel for the candidate table (imported only where Triton is installed): one
launch per decoded batch writes every mask's row (candidates.py) from the statistics kernel's
int32 accumulators, where the torch form takes about 60 launches.

Same arithmetic as ``candidate_rows_torch``: float32 stability by IEEE division of the counts,
the crop-edge test as torch.isclose computes it in float32, float32 threshold comparisons; the
rows are bit-identical.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from curate.amg.candidates import WIDTH, CropPlacement, Filters


@triton.jit
def _near_edge(coordinate, crop_edge, image_edge, atol):
    """One box coordinate (image frame) within atol of the crop's edge but not of the image's."""
    at_crop = tl.abs(coordinate.to(tl.float32) - crop_edge.to(tl.float32)) <= atol
    at_image = tl.abs(coordinate.to(tl.float32) - image_edge.to(tl.float32)) <= atol
    return at_crop & ~at_image


# scalars are not specialised: crop and image indices and coordinates of 0 or 1 are ordinary values
@triton.jit(do_not_specialize=["n", "masks_per_prompt", "crop_index", "image_index", "cx0", "cy0", "cx1", "cy1",
                               "ix0", "iy0", "ix1", "iy1", "nms_unit"])
def _candidate_kernel(acc_ptr, iou_ptr, points_ptr, table_ptr, ok_ptr, n, masks_per_prompt, crop_index,
                      image_index, cx0, cy0, cx1, cy1, ix0, iy0, ix1, iy1, crop_score, nms_unit, iou_thresh,
                      stability_thresh, atol, FILTER_IOU: tl.constexpr, FILTER_STABILITY: tl.constexpr,
                      COLS: tl.constexpr, BLOCK: tl.constexpr):
    """Rows of BLOCK masks: acc (n, 7) int32 accumulators (counts high/low/area, box corners at
    neutral values for an empty mask), iou (n,) float32, points (P, 2) float64 in the crop frame."""
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = m < n
    at = acc_ptr + m.to(tl.int64) * 7
    high = tl.load(at, mask=valid, other=0)
    low = tl.load(at + 1, mask=valid, other=0)
    area = tl.load(at + 2, mask=valid, other=0)
    filled = area > 0  # an empty mask's box is zeros
    x0 = tl.where(filled, tl.load(at + 3, mask=valid, other=0), 0).to(tl.int64)
    y0 = tl.where(filled, tl.load(at + 4, mask=valid, other=0), 0).to(tl.int64)
    x1 = tl.where(filled, tl.load(at + 5, mask=valid, other=0), 0).to(tl.int64)
    y1 = tl.where(filled, tl.load(at + 6, mask=valid, other=0), 0).to(tl.int64)
    iou = tl.load(iou_ptr + m, mask=valid, other=0.0)
    stability = tl.div_rn(high.to(tl.float32), tl.maximum(low, 1).to(tl.float32))
    stability = stability * tl.where(low > 0, 1.0, 0.0)
    # placed in the image
    px0, py0, px1, py1 = x0 + cx0, y0 + cy0, x1 + cx0, y1 + cy0
    near = (_near_edge(px0, cx0, ix0, atol) | _near_edge(py0, cy0, iy0, atol)
            | _near_edge(px1, cx1, ix1, atol) | _near_edge(py1, cy1, iy1, atol))
    ok = ~near
    if FILTER_IOU:
        ok = ok & (iou > iou_thresh)
    if FILTER_STABILITY:
        ok = ok & (stability >= stability_thresh)
    tl.store(ok_ptr + m, ok, mask=valid)

    prompt = (m // masks_per_prompt).to(tl.int64)
    point_x = tl.load(points_ptr + prompt * 2, mask=valid, other=0.0) + cx0
    point_y = tl.load(points_ptr + prompt * 2 + 1, mask=valid, other=0.0) + cy0
    crop_offset = crop_index * nms_unit
    image_offset = image_index * nms_unit
    zero = tl.zeros([BLOCK], tl.int64)
    row = table_ptr + m.to(tl.int64) * COLS
    # candidates.TABLE_COLUMNS in order (tests compare every column with the torch form)
    _put(row, 0, zero + crop_index, valid)
    _put_box(row, 1, x0, y0, x1, y1, 0, valid)
    _put(row, 5, iou, valid)
    _put(row, 6, stability, valid)
    _put(row, 7, area, valid)
    _put(row, 8, zero + image_index, valid)
    _put_box(row, 9, px0, py0, px1, py1, 0, valid)
    _put(row, 13, point_x, valid)
    _put(row, 14, point_y, valid)
    _put_box(row, 15, zero + cx0, zero + cy0, zero + cx1, zero + cy1, 0, valid)
    _put(row, 19, tl.zeros([BLOCK], tl.float32) + crop_score, valid)
    _put_box(row, 20, x0, y0, x1, y1, crop_offset, valid)
    _put_box(row, 24, px0, py0, px1, py1, image_offset, valid)


@triton.jit
def _put(row, column, value, valid):
    tl.store(row + column, value.to(tl.float64), mask=valid)


@triton.jit
def _put_box(row, column, x0, y0, x1, y1, offset, valid):
    _put(row, column, x0 + offset, valid)
    _put(row, column + 1, y0 + offset, valid)
    _put(row, column + 2, x1 + offset, valid)
    _put(row, column + 3, y1 + offset, valid)


def candidate_rows_triton(acc: torch.Tensor, iou: torch.Tensor, points: torch.Tensor, masks_per_prompt: int,
                          crop: CropPlacement, filters: Filters) -> tuple[torch.Tensor, torch.Tensor]:
    """``candidate_rows_torch`` from the statistics kernel's accumulators ``acc`` ((N, 7) int32,
    before ``finish_stats``), in one launch."""
    n = len(acc)
    table = torch.empty((n, WIDTH), dtype=torch.float64, device=acc.device)
    ok = torch.empty(n, dtype=torch.bool, device=acc.device)
    if n == 0:
        return table, ok
    block = 128
    _candidate_kernel[(triton.cdiv(n, block),)](
        acc.contiguous(), iou.float().contiguous(), points.contiguous(), table, ok, n, masks_per_prompt, crop.index,
        crop.image, *crop.box, *crop.image_box, crop.score, crop.nms_unit, filters.iou, filters.stability,
        filters.edge_atol, FILTER_IOU=filters.iou > 0, FILTER_STABILITY=filters.stability > 0, COLS=WIDTH,
        BLOCK=block, num_warps=4,
    )
    return table, ok
