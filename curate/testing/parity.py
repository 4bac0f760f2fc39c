"""Compare our masks with a reference generator's output (used by tests and benchmarks/amg.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ParityReport:
    n_reference: int
    n_ours: int
    matched_iou_min: float  # worst IoU over matched pairs (1.0 when both are empty)
    frac_iou_ge_099: float  # share of reference masks matched with IoU >= 0.99
    max_box_error_px: float  # largest coordinate difference of matched boxes

    @property
    def ok(self) -> bool:
        return (self.n_reference == self.n_ours and self.frac_iou_ge_099 >= 0.99
                and self.max_box_error_px <= 1.0)


def reference_arrays(anns: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """segment_anything annotations (binary_mask mode) -> masks (N, H, W), boxes xyxy exclusive."""
    if not anns:
        return np.zeros((0, 1, 1), dtype=bool), np.zeros((0, 4))
    masks = np.stack([a["segmentation"] for a in anns]).astype(bool)
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64)  # XYWH with W = x1 - x0 (inclusive)
    boxes[:, 2:] += boxes[:, :2] + 1
    return masks, boxes


def compare(ref_masks: np.ndarray, ref_boxes: np.ndarray, our_masks: np.ndarray, our_boxes: np.ndarray,
            device: str = "cpu") -> ParityReport:
    """Greedy one-to-one matching by mask IoU (best pairs first)."""
    n_r, n_o = len(ref_masks), len(our_masks)
    if n_r == 0 or n_o == 0:
        return ParityReport(n_r, n_o, 1.0 if n_r == n_o else 0.0, 1.0 if n_r == 0 else 0.0, 0.0)
    r = torch.as_tensor(ref_masks.reshape(n_r, -1), device=device).float()
    o = torch.as_tensor(our_masks.reshape(n_o, -1), device=device).float()
    inter = r @ o.T  # exact in float32 up to 2**24 pixels per mask
    union = r.sum(1)[:, None] + o.sum(1)[None, :] - inter
    iou = (inter / union.clamp_min(1)).cpu().numpy()
    pairs = []
    used_r, used_o = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), n_o)
        if i in used_r or j in used_o:
            continue
        used_r.add(i)
        used_o.add(j)
        pairs.append((i, j, iou[i, j]))
        if len(pairs) == min(n_r, n_o):
            break
    ious = np.array([p[2] for p in pairs])
    box_err = max(float(np.abs(ref_boxes[i] - our_boxes[j]).max()) for i, j, _ in pairs)
    return ParityReport(n_r, n_o, float(ious.min()), float((ious >= 0.99).sum() / n_r), box_err)
