"""The generator's merge step: one NMS call per pass over offset boxes equals torchvision's
batched_nms within each crop, then across the crops of each image (the references' order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.amg.candidates import COLUMN, Filters, candidate_rows_torch
from curate.amg.generator import _CropGeometry
from curate.testing.tiny_sam import tiny_sam


def reference_merge(table: np.ndarray, box_thresh: float, crop_thresh: float, images: int) -> list[np.ndarray]:
    """Per image, its survivors' rows: batched_nms by crop, crops in order, then batched_nms across
    the image's crops by 1 / crop area, as the reference generators do image by image."""
    t = torch.from_numpy(table)
    keep = batched_nms(t[:, COLUMN["box"]].float(), t[:, COLUMN["iou"]].float(), t[:, COLUMN["crop"]].long(),
                       box_thresh)
    keep = keep[torch.sort(t[keep, COLUMN["crop"]], stable=True).indices]
    t = t[keep]
    out = []
    for i in range(images):
        mine = t[t[:, COLUMN["image"]] == i]
        kept = batched_nms(mine[:, COLUMN["image_box"]].float(), mine[:, COLUMN["crop_score"]].float(),
                           torch.zeros(len(mine)), crop_thresh)
        out.append(mine[kept].numpy())
    return out


@pytest.mark.parametrize("seed", range(6))
def test_merge_equals_batched_nms_per_crop_then_per_image(seed):
    rng = np.random.default_rng(seed)
    images = [np.zeros((int(rng.integers(200, 700)), int(rng.integers(200, 700)), 3), np.uint8) for _ in range(3)]
    thresholds = dict(box_nms_thresh=float(rng.uniform(0.3, 0.9)), crop_nms_thresh=float(rng.uniform(0.3, 0.9)))
    generator = BatchedMaskGenerator(tiny_sam(seed=0), AmgParams(points_per_side=4, crop_n_layers=1, **thresholds))
    crops = generator._crops(images)
    geometry = _CropGeometry(crops, torch.device("cpu"), 1024)
    tables = []
    for ci, crop in enumerate(crops):  # 30 masks per crop, many overlapping, ties in IoU
        m = 30
        x0, y0 = rng.integers(0, 120, m), rng.integers(0, 120, m)
        x1 = np.minimum(x0 + rng.integers(0, 60, m), crop.hw[1] - 1)
        y1 = np.minimum(y0 + rng.integers(0, 60, m), crop.hw[0] - 1)
        stats = torch.from_numpy(np.stack([rng.integers(90, 100, m), np.full(m, 100), rng.integers(1, 3000, m),
                                           x0, y0, x1, y1], axis=1))
        iou = torch.from_numpy(rng.choice([0.7, 0.8, 0.9], m).astype(np.float32))
        table, _ = candidate_rows_torch(stats, iou, geometry.points[ci, :10], 3, geometry.placements[ci],
                                        Filters(0.0, 0.0))
        tables.append(table)
    table = torch.cat(tables)
    ok = torch.from_numpy(rng.uniform(size=len(table)) < 0.8)
    ours = generator._merge(images, crops, {"table": table, "ok": ok}, [0, 1, 2])
    expected = reference_merge(table[ok].numpy(), thresholds["box_nms_thresh"], thresholds["crop_nms_thresh"], 3)
    for result, rows in zip(ours, expected):
        assert 0 < len(rows) < (ok.sum() / 3)
        boxes = rows[:, COLUMN["image_box"]].copy()
        boxes[:, 2:] += 1
        np.testing.assert_array_equal(result.boxes, boxes)
        np.testing.assert_array_equal(result.points, rows[:, COLUMN["point_xy"]])
        np.testing.assert_array_equal(result.iou_preds, rows[:, COLUMN["iou"]].astype(np.float32))
