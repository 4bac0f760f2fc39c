"""High-res input schemes as pure functions: LLaVA-UHD slicing and VisualRWKV-HD lossless downsampling.

LLaVA-UHD (Sec. 3.1): the ideal slice count is N = ceil(W*H / (Wv*Hv)); candidate grids are the
factorisations m x n (m columns, n rows) of N-1, N and N+1; each is scored by
S(m, n) = -|log((W/m) / (H/n)) - log(Wv/Hv)| and the best kept (ties: fewer slices, then fewer columns).
VisualRWKV-HD: each 2x2 block of neighbouring feature vectors is concatenated into the channel
dimension (space-to-depth), halving the grid without losing information.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def factor_pairs(n: int) -> list[tuple[int, int]]:
    """All (m, n) with m * n == n_slices, m columns and n rows."""
    return [(m, n // m) for m in range(1, n + 1) if n % m == 0]


def uhd_partition(width: int, height: int, vit_width: int = 336, vit_height: int = 336,
                  max_slices: int | None = None) -> tuple[int, int]:
    """(columns, rows) of the LLaVA-UHD slice grid for a ``width`` x ``height`` image."""
    if width < 1 or height < 1:
        raise ValueError(f"empty image {width}x{height}")
    ideal = math.ceil(width * height / (vit_width * vit_height))
    if max_slices is not None:
        ideal = min(ideal, max_slices)
    if ideal <= 1:
        return 1, 1
    target = math.log(vit_width / vit_height)
    candidates = [pair for count in (ideal - 1, ideal, ideal + 1) if count >= 1
                  and (max_slices is None or count <= max_slices) for pair in factor_pairs(count)]

    def score(pair: tuple[int, int]) -> tuple[float, int, int]:
        m, n = pair
        return (-abs(math.log((width / m) / (height / n)) - target), -(m * n), -m)

    return max(candidates, key=score)


def slice_boxes(width: int, height: int, columns: int, rows: int) -> list[tuple[int, int, int, int]]:
    """Integer xyxy boxes of the grid's slices, row by row; they tile the image exactly."""
    xs = [round(i * width / columns) for i in range(columns + 1)]
    ys = [round(j * height / rows) for j in range(rows + 1)]
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(rows) for i in range(columns)]


def space_to_depth(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """(..., C, H, W) -> (..., C*block*block, H/block, W/block): VisualRWKV-HD's lossless downsampling
    (torch's pixel_unshuffle: channel c*block*block + i*block + j holds pixel (i, j) of each block)."""
    *lead, c, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"grid {h}x{w} is not divisible by {block}")
    out = F.pixel_unshuffle(x.reshape(-1, c, h, w), block)
    return out.reshape(*lead, c * block * block, h // block, w // block)


def depth_to_space(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """Inverse of ``space_to_depth``."""
    *lead, cbb, h, w = x.shape
    out = F.pixel_shuffle(x.reshape(-1, cbb, h, w), block)
    return out.reshape(*lead, cbb // (block * block), h * block, w * block)
