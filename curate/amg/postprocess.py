"""Mask post-processing as batched tensor functions; all run on whatever device the masks are on."""

from __future__ import annotations

import torch


def near_crop_edge(boxes: torch.Tensor, crop_boxes: torch.Tensor, image_boxes: torch.Tensor,
                   atol: float = 20.0) -> torch.Tensor:
    """Boxes (crop frame, one crop box and image box per row, xyxy) within ``atol`` px of a crop edge
    that is not also an image edge: such masks are probably cut by the crop, and a neighbouring crop
    or the full image sees them whole."""
    absolute = (boxes + crop_boxes[:, :2].repeat(1, 2)).float()
    at_crop = torch.isclose(absolute, crop_boxes.float(), atol=atol, rtol=0)
    at_image = torch.isclose(absolute, image_boxes.float(), atol=atol, rtol=0)
    return (at_crop & ~at_image).any(dim=1)
