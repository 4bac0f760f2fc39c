"""The candidate table: one row per mask of a decoded batch, everything the merge step needs.

After the decoder and the statistics, each mask is filtered (predicted IoU, stability, crop edge)
and placed in the image (box, prompt point, crop box). The merge step then waits for the device
once, keeps the rows that passed and runs two NMS passes on them. Computing the placement here, for
every mask while the device is still busy, rather than for the survivors after the wait, moves
that work off the host's critical path; on CUDA one Triton kernel (triton_candidates.py) writes a
batch's rows (about 60 small torch operations otherwise, each costing the device a few
microseconds between the decoder's kernels).

Rows are float64: exact for pixel counts, coordinates, indices and float32 scores. The NMS boxes
carry their group's offset (crop, or image, times ``nms_unit``), as torchvision's batched_nms
offsets them; integer coordinates below 2**24 keep every IoU bit-identical under any such offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from curate.amg.postprocess import near_crop_edge

# Columns and their widths: crop index, box in the crop (xyxy, corners inclusive), predicted IoU,
# stability, area, image index, box in the image, prompt point in the image (xy), crop box,
# 1 / crop area (the cross-crop NMS score), and the two NMS boxes (box + crop index x nms_unit,
# image box + image index x nms_unit).
TABLE_COLUMNS = {"crop": 1, "box": 4, "iou": 1, "stability": 1, "area": 1, "image": 1, "image_box": 4,
                 "point_xy": 2, "crop_box": 4, "crop_score": 1, "nms_box": 4, "nms_image_box": 4}
# a column's index, or a slice for wider ones
COLUMN = {name: start if width == 1 else slice(start, start + width) for (name, width), start in zip(
    TABLE_COLUMNS.items(), np.cumsum([0, *TABLE_COLUMNS.values()]).tolist())}
WIDTH = sum(TABLE_COLUMNS.values())


@dataclass(frozen=True)
class CropPlacement:
    """Where a crop's masks go: the crop's index and box, its image's index and box (xyxy, x1/y1
    exclusive), and the NMS group offset unit (above every box coordinate in a crop or image of the
    generator call; crop index x unit + coordinate must stay below 2**24 for float32 to be exact)."""

    index: int
    box: tuple[int, int, int, int]
    image: int
    image_box: tuple[int, int, int, int]
    nms_unit: int

    @property
    def score(self) -> float:
        """1 / crop area in float32, as torch computes ``1 / area.float()`` (IEEE division)."""
        x0, y0, x1, y1 = self.box
        return float(np.float32(1.0) / np.float32((x1 - x0) * (y1 - y0)))


@dataclass(frozen=True)
class Filters:
    """The references' filters: predicted IoU above ``iou`` (0: off), stability at least
    ``stability`` (0: off), and no box edge within ``edge_atol`` px of a crop edge that is not an
    image edge."""

    iou: float
    stability: float
    edge_atol: float = 20.0


def candidate_rows_torch(stats: torch.Tensor, iou: torch.Tensor, points: torch.Tensor, masks_per_prompt: int,
                         crop: CropPlacement, filters: Filters) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (N, WIDTH) and ``ok`` (N,) for N masks of one crop, in torch operations (any device).

    stats: (N, 7) int64 from ``mask_stats``; iou: (N,) float32 predicted IoU; points: (P, 2)
    float64 prompt points of the masks' prompts in the crop frame (mask i of prompt i //
    masks_per_prompt)."""
    device = stats.device
    n = len(stats)
    boxes, area = stats[:, 3:7], stats[:, 2]
    high, low = stats[:, 0], stats[:, 1]
    stability = (high / low.clamp_min(1)).float() * (low > 0)
    crop_box = torch.tensor(crop.box, dtype=torch.int64, device=device)
    image_box = torch.tensor(crop.image_box, dtype=torch.int64, device=device)
    ok = ~near_crop_edge(boxes, crop_box.expand(n, 4), image_box.expand(n, 4), filters.edge_atol)
    if filters.iou > 0:
        ok &= iou > filters.iou
    if filters.stability > 0:
        ok &= stability >= filters.stability
    offset = crop_box[:2].repeat(2)
    placed = boxes + offset
    point_xy = points.repeat_interleave(masks_per_prompt, dim=0) + crop_box[:2]
    columns = {"crop": torch.full((n,), crop.index, device=device), "box": boxes, "iou": iou,
               "stability": stability, "area": area, "image": torch.full((n,), crop.image, device=device),
               "image_box": placed, "point_xy": point_xy, "crop_box": crop_box.expand(n, 4),
               "crop_score": torch.full((n,), crop.score, dtype=torch.float32, device=device),
               "nms_box": boxes + crop.index * crop.nms_unit, "nms_image_box": placed + crop.image * crop.nms_unit}
    table = torch.cat([columns[name].double().reshape(n, -1) for name in TABLE_COLUMNS], dim=1)
    return table, ok
