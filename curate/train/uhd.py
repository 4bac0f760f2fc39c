"""LLaVA-UHD's high-res input scheme on our ViT (seed: LLaVA-UHD Sec. 3), with VisualRWKV-HD's lossless
2x2 downsampling as one compression choice.

An image is cut into the slice grid ``uhd_partition`` picks for the ViT's native resolution; the
overview (the whole image) and each slice are resized to about the native area with their own aspect
ratio and encoded with position embeddings resampled to their grid. A compression layer shortens each
view's tokens (a perceiver resampler of learned queries, or space-to-depth + linear), and the spatial
schema lays them out for a language model: the overview, then the slices row by row, a "," token
between slices of a row and a "\\n" token after each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from curate.train.attention import encode_with_context
from curate.train.geometry import area_grid
from curate.train.patches import embed_patches, resize_view
from curate.train.slicing import slice_boxes, space_to_depth, uhd_partition


@dataclass
class UHDViews:
    """The encoded views of one image: overview and slices (hidden states with their grids)."""
    overview: torch.Tensor  # (rows*cols, D)
    overview_grid: tuple[int, int]
    slices: list[torch.Tensor]  # each (rows*cols, D)
    slice_grids: list[tuple[int, int]]
    slice_px: list[tuple[int, int, int, int]]  # where each slice lies in the image, in pixels
    layout: tuple[int, int]  # (columns, rows)


class UHDScheme(nn.Module):
    def __init__(self, vision_model, patch: int, native: int, max_slices: int, compress: str, queries: int):
        super().__init__()
        self.vm = vision_model
        self.patch, self.native, self.max_slices = patch, native, max_slices
        self.cells = native // patch
        d = vision_model.config.hidden_size
        self.compress = compress
        self.comma = nn.Parameter(torch.zeros(d))
        self.newline = nn.Parameter(torch.zeros(d))
        if compress == "resampler":
            self.queries = nn.Parameter(torch.randn(queries, d) * d**-0.5)
            self.cross = nn.MultiheadAttention(d, max(1, d // 64), batch_first=True)
            self.norm = nn.LayerNorm(d)
        elif compress == "space_to_depth":
            self.merge = nn.Linear(4 * d, d)
        else:
            raise ValueError(f"unknown compression {compress!r}")

    def encode_view(self, image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        view = resize_view(image, rows, cols, self.patch)
        tokens = embed_patches(self.vm.embeddings, view)[None]
        return self.vm.post_layernorm(encode_with_context(self.vm.encoder, tokens, None))[0]

    def views(self, image: torch.Tensor) -> UHDViews:
        """Encode the overview and the slices of one (3, H, W) image."""
        height, width = image.shape[-2:]
        overview_grid = area_grid(width, height, self.cells)
        cols, rows = uhd_partition(width, height, self.native, self.native, self.max_slices)
        boxes = slice_boxes(width, height, cols, rows) if cols * rows > 1 else []
        grids = [area_grid(x1 - x0, y1 - y0, self.cells) for x0, y0, x1, y1 in boxes]
        slices = [self.encode_view(image[:, y0:y1, x0:x1], *grid) for (x0, y0, x1, y1), grid in zip(boxes, grids)]
        return UHDViews(self.encode_view(image, *overview_grid), overview_grid, slices, grids, boxes, (cols, rows))

    def compress_view(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.compress == "resampler":
            out, _ = self.cross(self.queries[None], tokens[None], tokens[None], need_weights=False)
            return self.norm(out[0])
        rows, cols = grid
        fmap = tokens.t().reshape(-1, rows, cols)
        fmap = F.pad(fmap, (0, cols % 2, 0, rows % 2))  # an odd grid gets one zero row/column
        return self.merge(space_to_depth(fmap).flatten(1).t())

    def sequence(self, views: UHDViews) -> torch.Tensor:
        """The language-model-facing token sequence with the spatial schema."""
        parts = [self.compress_view(views.overview, views.overview_grid)]
        if views.slices:
            parts.append(self.newline[None])
            cols, rows = views.layout
            for r in range(rows):
                for c in range(cols):
                    i = r * cols + c
                    parts.append(self.compress_view(views.slices[i], views.slice_grids[i]))
                    parts.append((self.comma if c < cols - 1 else self.newline)[None])
        return torch.cat(parts)
