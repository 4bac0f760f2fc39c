"""Patch tokens of a view of any grid shape: the ViT's patch embedding applied to chosen patches only
(PS3 embeds only the selected high-res patches), plus the ViT's position embedding resampled to the
grid and, per scale, a learned residual (PS3's scale-aware position embedding, Table 6: +0.8)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resize_view(image: torch.Tensor, rows: int, cols: int, patch: int) -> torch.Tensor:
    """(3, H, W) -> (3, rows * patch, cols * patch), bicubic with antialiasing (float32 in, as given out)."""
    size = (rows * patch, cols * patch)
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True,
                         align_corners=False)[0].to(image.dtype)


def patch_pixels(view: torch.Tensor, patch: int) -> torch.Tensor:
    """(3, rows*p, cols*p) -> (rows*cols, 3*p*p), row-major, each patch's pixels in conv-weight order."""
    c, h, w = view.shape
    rows, cols = h // patch, w // patch
    return view.reshape(c, rows, patch, cols, patch).permute(1, 3, 0, 2, 4).reshape(rows * cols, c * patch * patch)


def grid_positions(table: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A square (n, D) position table (n = g*g) resampled to rows x cols -> (rows*cols, D)."""
    g = int(math.isqrt(table.shape[0]))
    grid = table.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    if (rows, cols) != (g, g):
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
    return grid.flatten(2)[0].t().to(table.dtype)


def embed_patches(embeddings, view: torch.Tensor, index: torch.Tensor | None = None,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens of a view (3, rows*p, cols*p): all patches, or ``index`` (..., k) of them. ``embeddings`` is
    a SiglipVisionEmbeddings; ``residual`` an optional square (n, D) table added after resampling."""
    conv = embeddings.patch_embedding
    patch = conv.kernel_size[0]
    rows, cols = view.shape[-2] // patch, view.shape[-1] // patch
    pixels = patch_pixels(view.to(conv.weight.dtype), patch)
    positions = grid_positions(embeddings.position_embedding.weight, rows, cols)
    if residual is not None:
        positions = positions + grid_positions(residual, rows, cols)
    if index is not None:
        pixels, positions = pixels[index], positions[index]
    return F.linear(pixels, conv.weight.flatten(1), conv.bias) + positions
