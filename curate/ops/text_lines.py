"""Document regions from text-line boxes (pure numpy, no OCR here).

PS3's document boxes are text-line shaped (seed Table 9: tens of pixels tall, hundreds wide), and a
region's caption is its OCR text, so a region must hold whole lines: a square window cuts words
("of the riv"). Steps:
1. drop specks (lines shorter than ``min_line_px``);
2. chain each line to the next line of its column below it (horizontal overlap, a small gap), up to
   ``lines_per_region`` lines per block; a block never takes lines of another column;
3. order blocks for reading (top to bottom, then left to right) and keep up to ``max_boxes`` of them
   spread evenly over that order (title, body and small print, not four neighbours);
4. pad each block by a margin in units of its line height, clipped to the image.
Blocks are disjoint sets of lines, so no kept box nests in another beyond the margins.
"""

from __future__ import annotations

import numpy as np

from curate.ops.select import SalientBox, snap


def line_heights(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, 3] - boxes[:, 1]


def horizontal_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two boxes' x-ranges over the narrower one."""
    inter = min(a[2], b[2]) - max(a[0], b[0])
    return max(0.0, inter) / max(1e-9, min(a[2] - a[0], b[2] - b[0]))


def next_line_below(boxes: np.ndarray, i: int, taken: np.ndarray, max_gap: float, min_overlap: float) -> int | None:
    """The nearest untaken line below line ``i`` in its column, if the gap between them is at most
    ``max_gap`` line heights."""
    h = boxes[i, 3] - boxes[i, 1]
    best, best_gap = None, np.inf
    for j in np.flatnonzero(~taken):
        gap = boxes[j, 1] - boxes[i, 3]
        if j == i or boxes[j, 1] < boxes[i, 1] + 0.5 * h or gap > max_gap * h:
            continue
        if horizontal_overlap(boxes[i], boxes[j]) >= min_overlap and gap < best_gap:
            best, best_gap = int(j), gap
    return best


def group_lines(boxes: np.ndarray, lines_per_region: int, max_gap: float = 1.0,
                min_overlap: float = 0.5) -> list[list[int]]:
    """Blocks of consecutive lines of one column (indices into ``boxes``), each at most
    ``lines_per_region`` long, in reading order of their first line."""
    order = np.lexsort((boxes[:, 0], boxes[:, 1]))
    taken = np.zeros(len(boxes), dtype=bool)
    blocks = []
    for i in order:
        if taken[i]:
            continue
        block = [int(i)]
        taken[i] = True
        while len(block) < lines_per_region:
            j = next_line_below(boxes, block[-1], taken, max_gap, min_overlap)
            if j is None:
                break
            block.append(j)
            taken[j] = True
        blocks.append(block)
    return blocks


def spread_picks(count: int, k: int) -> list[int]:
    """Up to ``k`` of ``count`` positions, evenly spread from the first to the last."""
    if count <= k:
        return list(range(count))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, k)})


def text_line_regions(boxes: np.ndarray, width: int, height: int, max_boxes: int, lines_per_region: int = 1,
                      min_line_px: float = 6, margin_x: float = 0.3,
                      margin_y: float = 0.1) -> list[tuple[SalientBox, list[int]]]:
    """Regions (one or a few consecutive text lines each) from line boxes (N, 4 xyxy px), each with
    the indices of its lines into ``boxes``, top to bottom."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    kept = np.flatnonzero(line_heights(boxes) >= min_line_px)
    if max_boxes == 0 or not len(kept):
        return []
    lines_of = boxes[kept]
    blocks = group_lines(lines_of, lines_per_region)
    blocks.sort(key=lambda b: (lines_of[b, 1].min(), lines_of[b, 0].min()))
    out = []
    for b in (blocks[i] for i in spread_picks(len(blocks), max_boxes)):
        lines = lines_of[b]
        h = float(np.median(line_heights(lines)))
        union = np.array([lines[:, 0].min() - margin_x * h, lines[:, 1].min() - margin_y * h,
                          lines[:, 2].max() + margin_x * h, lines[:, 3].max() + margin_y * h])
        box = snap(union, width, height)
        area = (box[2] - box[0]) * (box[3] - box[1])
        text_area = float(((lines[:, 2] - lines[:, 0]) * (lines[:, 3] - lines[:, 1])).sum())
        region = SalientBox(box=box, score=float(len(b)), n_masks=len(b), mask_area_frac=text_area / max(1, area))
        out.append((region, [int(kept[i]) for i in b]))
    return out
