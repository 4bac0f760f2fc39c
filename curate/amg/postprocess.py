"""Mask post-processing as batched tensor functions; all run on whatever device the masks are on."""

from __future__ import annotations

import torch


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks thresholded at ``threshold + offset`` and ``threshold - offset``.
    Counts are exact integers, so the score does not depend on the logits' dtype beyond rounding."""
    high = (logits > threshold + offset).sum(dim=(-1, -2), dtype=torch.int32)
    low = (logits > threshold - offset).sum(dim=(-1, -2), dtype=torch.int32)
    return high / low.clamp_min(1) * (low > 0)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) xyxy with x1/y1 the last covered pixel (inclusive); empty -> zeros."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ys, -1).amax(dim=1)
    top = torch.where(rows, ys, h).amin(dim=1)
    right = torch.where(cols, xs, -1).amax(dim=1)
    left = torch.where(cols, xs, w).amin(dim=1)
    boxes = torch.stack([left, top, right, bottom], dim=1)
    empty = (right < left) | (bottom < top)
    return boxes * (~empty)[:, None]


def near_crop_edge(boxes: torch.Tensor, crop_box: list[int], image_box: list[int], atol: float = 20.0) -> torch.Tensor:
    """Boxes (crop frame) within ``atol`` px of a crop edge that is not also an image edge: such
    masks are probably cut by the crop, and a neighbouring crop or the full image sees them whole."""
    crop = torch.tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.tensor(image_box, dtype=torch.float32, device=boxes.device)
    offset = torch.tensor([crop_box[0], crop_box[1], crop_box[0], crop_box[1]], device=boxes.device)
    absolute = (boxes + offset).float()
    at_crop = torch.isclose(absolute, crop[None, :], atol=atol, rtol=0)
    at_image = torch.isclose(absolute, image[None, :], atol=atol, rtol=0)
    return (at_crop & ~at_image).any(dim=1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
