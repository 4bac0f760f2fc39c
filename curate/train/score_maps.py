"""Ground-truth selection score maps at patch resolution (PS3 Fig. 5b/c), as pure functions.

A patch's score is the fraction of its area covered by the box (1 inside, 0 outside, fractional on
the border), so maps are exact for any box and resolution. Top-down: the map of the one box tied to a
caption; bottom-up: the covered fraction of the union of all of the image's boxes.
"""

from __future__ import annotations

import numpy as np
import torch

from curate.train.selection import top_fraction_mask


def _axis_coverage(lo: float, hi: float, cells: int) -> np.ndarray:
    """Length of [lo, hi] (in cell units) falling in each of ``cells`` unit cells."""
    edges = np.arange(cells + 1, dtype=np.float64)
    return np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, 1.0)


def box_score_map(box_norm, grid_h: int, grid_w: int) -> np.ndarray:
    """(grid_h, grid_w) float map: share of each patch inside ``box_norm`` (x0, y0, x1, y1 in [0, 1])."""
    x0, y0, x1, y1 = box_norm
    cov_x = _axis_coverage(x0 * grid_w, x1 * grid_w, grid_w)
    cov_y = _axis_coverage(y0 * grid_h, y1 * grid_h, grid_h)
    return np.outer(cov_y, cov_x)


def union_score_map(boxes_norm, grid_h: int, grid_w: int, supersample: int = 8) -> np.ndarray:
    """Share of each patch covered by the union of boxes (exact up to 1/supersample of a patch side)."""
    if len(boxes_norm) == 0:
        return np.zeros((grid_h, grid_w))
    h, w = grid_h * supersample, grid_w * supersample
    covered = np.zeros((h, w), dtype=bool)
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    for x0, y0, x1, y1 in boxes_norm:
        covered |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return covered.reshape(grid_h, supersample, grid_w, supersample).mean(axis=(1, 3))


def ground_truth_patches(gt: torch.Tensor) -> torch.Tensor:
    """Bool (..., N): patches a box covers by more than half or, for a box smaller than that, the
    patches it covers most (none where it covers nothing)."""
    best = gt.amax(-1, keepdim=True)
    return torch.where(best > 0.5, gt > 0.5, (gt == best) & (best > 0))


def selection_recall(scores: torch.Tensor, gt: torch.Tensor, select_frac: float) -> torch.Tensor:
    """PS3 Table 7's recall: share of ground-truth patches among the top ``select_frac`` of patches by
    predicted score (``ground_truth_patches``). ``scores`` and ``gt``: (..., N). Rows without any box
    coverage are NaN."""
    top = top_fraction_mask(scores, select_frac)
    positive = ground_truth_patches(gt)
    hits = (top & positive).sum(-1).float()
    total = positive.sum(-1).float()
    return torch.where(total > 0, hits / total.clamp(min=1), torch.full_like(total, float("nan")))
