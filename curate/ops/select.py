"""Salient-box selection: windows dense in small masks (PS3 Fig. 2, "regions with small or dense masks").

Pure numpy, no Ray. Steps:
1. weight each mask: 1 when its area is at most ``small_mask_frac`` of the image, decaying as
   ``(small_mask_frac / area_frac) ** size_exponent`` above that, so big masks count little;
2. slide square windows at several scales (fractions of the image's shorter side) and sum the
   weights of the masks whose centre falls inside; a window's score is that sum divided by
   ``window_area_frac ** scale_penalty`` (0 favours big windows, 1 pure density);
3. take windows best-first, optionally tightened to the union of their masks' boxes (or grown to it,
   ``expand_to_members``, which keeps whole text lines for document layouts), grown to
   ``min_box_px``, kept only if their IoU with every kept box is at most ``nms_iou`` and at most
   ``max_containment`` of either box lies inside the other (IoU alone lets a small box sit wholly
   inside a big one);
4. with ``spread``, the masks a kept box covers, and those within ``spread_margin`` of its sides
   around it, stop counting and the windows are scored again, so the next box goes to another
   cluster rather than to the tile beside the first; once no window scores, every mask counts again
   (spread orders the boxes, it does not cost an image its boxes).
Masks are put in a canonical order and ties break on window position, so the result does not
depend on the order of the masks.
Boxes are xyxy integer pixels with x1/y1 exclusive, inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.config import SelectConfig


@dataclass(frozen=True)
class SalientBox:
    box: tuple[int, int, int, int]
    score: float
    n_masks: int
    mask_area_frac: float


def mask_weights(areas: np.ndarray, image_area: float, small_mask_frac: float, size_exponent: float) -> np.ndarray:
    frac = np.maximum(areas / image_area, 1e-12)
    return np.where(frac <= small_mask_frac, 1.0, (small_mask_frac / frac) ** size_exponent)


def window_origins(extent: int, side: int, stride: int) -> np.ndarray:
    """Window starts covering [0, extent) with the last window flush with the far edge."""
    if side >= extent:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, extent - side + 1, max(1, stride), dtype=np.int64)
    if starts[-1] != extent - side:
        starts = np.append(starts, extent - side)
    return starts


def candidate_windows(width: int, height: int, cfg: SelectConfig) -> np.ndarray:
    """All candidate windows (M, 4) xyxy over every scale."""
    short = min(width, height)
    windows = []
    for frac in cfg.window_fracs:
        side = max(1, int(round(frac * short)))
        stride = max(1, int(round(side * cfg.stride_frac)))
        xs = window_origins(width, min(side, width), stride)
        ys = window_origins(height, min(side, height), stride)
        gx, gy = np.meshgrid(xs, ys, indexing="xy")
        gx, gy = gx.ravel(), gy.ravel()
        windows.append(np.stack([gx, gy, gx + min(side, width), gy + min(side, height)], axis=1))
    return np.concatenate(windows).astype(np.float64) if windows else np.zeros((0, 4))


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def intersection_areas(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Area of ``box`` (x0, y0, x1, y1) shared with each of ``others`` (N, 4)."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    return ix * iy


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    inter = intersection_areas(box, others)
    return inter / np.maximum(box_areas(box) + box_areas(others) - inter, 1e-12)


def containment(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area: 1 when one box lies wholly inside the other."""
    return intersection_areas(box, others) / np.maximum(np.minimum(box_areas(box), box_areas(others)), 1e-12)


def grow_to_min_size(box: np.ndarray, min_side: int, width: int, height: int) -> np.ndarray:
    """Grow a box around its centre to at least ``min_side`` per side, shifted to stay in the image."""
    out = box.astype(np.float64).copy()
    for lo, hi, extent in ((0, 2, width), (1, 3, height)):
        need = min(min_side, extent)
        if out[hi] - out[lo] < need:
            centre = (out[lo] + out[hi]) / 2
            out[lo] = centre - need / 2
            out[hi] = out[lo] + need
        shift = max(0.0, -out[lo]) - max(0.0, out[hi] - extent)
        out[lo] += shift
        out[hi] += shift
    return out


def snap(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    x0 = int(np.clip(np.floor(box[0]), 0, width - 1))
    y0 = int(np.clip(np.floor(box[1]), 0, height - 1))
    x1 = int(np.clip(np.ceil(box[2]), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box[3]), y0 + 1, height))
    return x0, y0, x1, y1


def select_salient_boxes(
    boxes: np.ndarray, areas: np.ndarray, width: int, height: int, cfg: SelectConfig
) -> list[SalientBox]:
    """Choose up to ``cfg.max_boxes`` salient boxes from mask boxes (N, 4 xyxy px) and areas (N,) px."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    if cfg.max_boxes == 0 or len(areas) < cfg.min_masks:
        return []
    # Canonical mask order: float sums then do not depend on the order the generator emitted.
    canonical = np.lexsort((areas, boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0]))
    boxes, areas = boxes[canonical], areas[canonical]
    image_area = float(width * height)
    weights = mask_weights(areas, image_area, cfg.small_mask_frac, cfg.size_exponent)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2

    windows = candidate_windows(width, height, cfg)
    inside = (
        (cx[None, :] >= windows[:, 0:1]) & (cx[None, :] < windows[:, 2:3])
        & (cy[None, :] >= windows[:, 1:2]) & (cy[None, :] < windows[:, 3:4])
    )
    counts = inside.sum(axis=1)
    window_area = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    density = (window_area / image_area) ** cfg.scale_penalty
    eligible = np.flatnonzero(counts >= cfg.min_masks)

    kept: list[SalientBox] = []
    kept_boxes = np.zeros((0, 4))
    rejected = np.zeros(len(windows), dtype=bool)
    live = weights.copy()  # with spread, masks under a kept box stop counting
    spreading = cfg.spread
    while len(kept) < cfg.max_boxes:
        scores = (inside @ live) / density
        pool = eligible[~rejected[eligible] & (scores[eligible] > 0)]
        # Best score first; ties broken by window geometry so mask order never matters.
        order = pool[np.lexsort((windows[pool, 3], windows[pool, 2], windows[pool, 1], windows[pool, 0],
                                 -scores[pool]))]
        accepted = None
        for w in order:
            candidate = window_box(windows[w], boxes[inside[w]], width, height, cfg)
            if len(kept_boxes) and (box_iou(candidate, kept_boxes).max() > cfg.nms_iou
                                    or containment(candidate, kept_boxes).max() > cfg.max_containment):
                rejected[w] = True  # kept boxes only grow in number: it stays rejected
                continue
            accepted = (w, candidate)
            break
        if accepted is None:
            if spreading:  # every cluster has a box: fill the rest as without spread
                live, spreading = weights.copy(), False
                continue
            break
        w, candidate = accepted
        members = inside[w]
        box_area = (candidate[2] - candidate[0]) * (candidate[3] - candidate[1])
        kept.append(SalientBox(
            box=tuple(int(v) for v in candidate),
            score=float(scores[w]),
            n_masks=int(counts[w]),
            mask_area_frac=float(min(areas[members].sum() / box_area, 1e6)),
        ))
        kept_boxes = np.vstack([kept_boxes, candidate])
        rejected[w] = True
        if spreading:  # the kept box and a margin around it: the cluster it sits on
            mx = cfg.spread_margin * (candidate[2] - candidate[0])
            my = cfg.spread_margin * (candidate[3] - candidate[1])
            live[(cx >= candidate[0] - mx) & (cx < candidate[2] + mx)
                 & (cy >= candidate[1] - my) & (cy < candidate[3] + my)] = 0.0
    return kept


def window_box(window: np.ndarray, member_boxes: np.ndarray, width: int, height: int, cfg: SelectConfig) -> np.ndarray:
    """A window made a box: tightened to (or grown to) its masks' union, grown to ``min_box_px``, snapped."""
    union = np.array([member_boxes[:, 0].min(), member_boxes[:, 1].min(),
                      member_boxes[:, 2].max(), member_boxes[:, 3].max()])
    candidate = window
    if getattr(cfg, "expand_to_members", False):
        candidate = np.array([max(union[0], 0), max(union[1], 0), min(union[2], width), min(union[3], height)])
    elif cfg.tighten:
        candidate = np.array([max(union[0], window[0]), max(union[1], window[1]),
                              min(union[2], window[2]), min(union[3], window[3])])
    return np.array(snap(grow_to_min_size(candidate, cfg.min_box_px, width, height), width, height),
                    dtype=np.float64)
