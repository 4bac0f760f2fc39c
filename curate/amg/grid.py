"""Point grids and crop boxes: the prompt layout of automatic mask generation (pure numpy)."""

from __future__ import annotations

import math
from itertools import product

import numpy as np


def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points in [0, 1]^2, cell centres of an n x n grid, x varying fastest."""
    offset = 1.0 / (2 * n_per_side)
    centres = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(centres[None, :], (n_per_side, 1))
    ys = np.tile(centres[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has n_per_side / downscale**i points per side."""
    return [point_grid(int(n_per_side / (downscale**i))) for i in range(n_layers + 1)]


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (xyxy, pixels, x1/y1 exclusive) and their layers: the whole image, then
    2**(i+1) x 2**(i+1) overlapping crops for layer i+1 (x-major order)."""
    boxes, layers = [[0, 0, width, height]], [0]
    short_side = min(height, width)
    for layer in range(n_layers):
        n = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + width) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + height) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer + 1)
    return boxes, layers


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Shape after resizing so the longer side is ``long_side`` (SAM's ResizeLongestSide rule)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)
