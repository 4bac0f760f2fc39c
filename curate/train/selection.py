"""Patch selection from score maps (PS3 Sec. 2.2 stage 2), as pure tensor functions.

Scores live on the square low-res grid; each high-res scale has its own native-aspect grid covering
the same image, so a score map reaches a scale by nearest-neighbour resampling. Selection is top-k
over the resampled scores; with ground truth "mixed in" (PS3's ``select_w_gt``), patches touched by
the box come first and the predicted scores fill the rest of the budget and order the ties.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_scores(scores: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(R, g, g) score maps -> (R, rows * cols) on a rows x cols grid (nearest neighbour)."""
    return F.interpolate(scores[:, None].float(), size=(rows, cols), mode="nearest").flatten(1)


def choose_patches(scores: torch.Tensor, k: int, forced: torch.Tensor | None = None) -> torch.Tensor:
    """(R, k) patch indices per row: the top-k by score, ``forced`` patches (bool, R x N) first.
    When a grid has fewer than k patches, its chosen patches repeat cyclically so every row of a
    batch has the same length."""
    key = scores.float().sigmoid()
    if forced is not None:
        key = key + 2.0 * forced.float()
    take = min(k, key.shape[-1])
    index = key.topk(take, dim=-1).indices
    if take < k:
        index = index[:, torch.arange(k, device=index.device) % take]
    return index


def patch_pool_weights(coverage: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Weights for pooling the chosen tokens: 1 on those the box covers (PS3's ``pool_gt_token_only``),
    every chosen token where none is covered (a prediction that missed the box)."""
    inside = coverage.gather(-1, index) > 0
    none = ~inside.any(-1, keepdim=True)
    return (inside | none).float()


def top_fraction_mask(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """(R, N) bool: the top ``fraction`` of patches of each row (at least one)."""
    k = max(1, round(fraction * scores.shape[-1]))
    return torch.zeros_like(scores, dtype=torch.bool).scatter(-1, scores.topk(k, dim=-1).indices, True)
