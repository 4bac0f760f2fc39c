"""Pillow's BILINEAR resize of uint8 images, bit for bit, as tensor operations (GPU or CPU).

The reference generators resize every crop with PIL on the CPU (``ResizeLongestSide``), which
costs more than the image encoder itself at 2K-4K. Pillow resamples in two separable passes with
fixed-point integer weights (22 fractional bits) and rounds to uint8 after each pass; here each
pass is one float64 matrix product with the same integer weights. Products and sums of those
integers stay below 2**53, so float64 holds them exactly and the result equals Pillow's.
On CUDA with Triton the generator takes triton_preprocess.py's kernel instead (same pixels, with
normalisation and padding in the same launch); this form serves devices without it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from curate.amg.transfer import upload

PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c


@lru_cache(maxsize=64)
def pil_bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's fixed-point bilinear weights (integers) as the nonzeros of an (out_size, in_size)
    matrix: rows, columns, values (float64)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear (triangle) filter's support is 1
    ksize = int(np.ceil(support)) * 2 + 1
    centres = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(centres - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(centres + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    used = taps[None, :] < xmax[:, None]
    distance = np.abs((taps[None, :] + xmin[:, None] - centres[:, None] + 0.5) * (1.0 / filterscale))
    weights = np.where(used & (distance < 1.0), 1.0 - distance, 0.0)
    total = np.zeros(out_size)
    for tap in range(ksize):  # Pillow sums the taps in order; keep its rounding
        total += weights[:, tap]
    weights = np.where(total[:, None] != 0.0, weights / np.where(total == 0, 1.0, total)[:, None], weights)
    fixed = np.trunc(0.5 + weights * (1 << PRECISION_BITS))
    rows = np.repeat(np.arange(out_size), ksize)
    cols = (xmin[:, None] + taps[None, :]).reshape(-1)
    keep = used.reshape(-1)
    return rows[keep], cols[keep], fixed.reshape(-1)[keep]


def pil_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix of Pillow's fixed-point bilinear weights (integers)."""
    rows, cols, values = pil_bilinear_taps(in_size, out_size)
    matrix = np.zeros((out_size, in_size))
    matrix[rows, cols] = values
    return matrix


@lru_cache(maxsize=8)
def _weights(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """The weight matrix built on the device from its few nonzeros (a dense float64 matrix is
    tens of MB at 4K: copying it would cost more than the resize). Kept for the next image of the
    same size: building it is a few host-to-device copies and launches before every encoder call."""
    rows, cols, values = pil_bilinear_taps(in_size, out_size)
    matrix = torch.zeros((out_size, in_size), dtype=torch.float64, device=device)
    matrix[upload(rows, device), upload(cols, device)] = upload(values, device)
    return matrix


def _round_pass(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8: add half, shift right by PRECISION_BITS, clamp to 0..255."""
    return torch.floor((acc + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp_(0, 255)


def pil_resize_bilinear(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (H, W, C) tensor -> (C, height, width) float tensor of uint8 values, equal to
    ``np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))`` transposed."""
    x = image.permute(2, 0, 1).to(torch.float64)
    in_h, in_w = x.shape[1:]
    if width != in_w:
        x = _round_pass(x @ _weights(in_w, width, x.device).T)
    if height != in_h:
        x = _round_pass(_weights(in_h, height, x.device) @ x)
    return x.float()
