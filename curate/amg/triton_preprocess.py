"""Fused Triton kernel for the encoder's input (imported only where Triton is installed): Pillow's
bilinear resize of a uint8 crop, bit for bit, then normalisation and zero padding, in one launch.

resize.py's torch form costs two float64 matrix products, two rounding passes, a normalisation
per channel, a pad and a stack: about 20 launches per crop and 0.6 ms of GPU time, which the host
pays before the image encoder can start. Here each output pixel computes Pillow's fixed-point
sums itself in int32 (the horizontal pass's sums for each of its rows, rounded to uint8 as Pillow
rounds its intermediate image, then the vertical sum), so the result equals Pillow's exactly:
weights are integers below 2**22 summing to about 2**22, so 255 * sum + 2**21 < 2**31. An axis
that keeps its size is one tap of weight 2**22, which returns the pixel unchanged.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import triton
import triton.language as tl

from curate.amg.resize import PRECISION_BITS, pil_bilinear_taps
from curate.amg.transfer import upload

_HALF = tl.constexpr(1 << (PRECISION_BITS - 1))
_BITS = tl.constexpr(PRECISION_BITS)


@triton.jit
def _clip8(acc):
    """Pillow's clip8: the fixed-point sum (rounding half already added) back to 0..255."""
    return tl.minimum(tl.maximum(acc >> _BITS, 0), 255)


# one compiled kernel per horizontal tap count (tap_bucket: 1, 4, 8, 12, 16 ...): the column taps
# are unrolled, so that all of a row's gathers are in flight at once; the vertical taps stay a
# loop (both unrolled, 3 x 15 x 15 gathers took over a minute to compile)
@triton.jit(do_not_specialize=["out_h", "out_w", "stride_y", "KY"])
def _resize_normalise_kernel(image_ptr, out_ptr, row_index_ptr, row_weight_ptr, col_index_ptr, col_weight_ptr,
                             stride_y, out_h, out_w, KY, mean0, mean1, mean2, std0, std1, std2,
                             KX: tl.constexpr, S: tl.constexpr, BY: tl.constexpr, BX: tl.constexpr):
    """One (BY, BX) block of the (3, S, S) output: resized pixels inside (out_h, out_w), zeros
    (the padding) outside. image: uint8 (rows, cols, 3) with row stride stride_y, channels last;
    KY, KX: taps per output row and column."""
    ys = tl.program_id(0) * BY + tl.arange(0, BY)
    xs = tl.program_id(1) * BX + tl.arange(0, BX)
    y_in, x_in = ys < out_h, xs < out_w
    inside = y_in[:, None] & x_in[None, :]
    # the three channels side by side: each tap's index and weight are read once and its three
    # gathers are in flight together (the kernel waits on dependent loads, not on arithmetic)
    red = tl.full((BY, BX), _HALF, tl.int32)
    green = tl.full((BY, BX), _HALF, tl.int32)
    blue = tl.full((BY, BX), _HALF, tl.int32)
    # a block wholly in the padding (a fifth to a quarter of a landscape crop's) only writes zeros
    in_image = (tl.program_id(0) * BY < out_h) & (tl.program_id(1) * BX < out_w)
    for ky in range(tl.where(in_image, KY, 0)):
        row = tl.load(row_index_ptr + ys * KY + ky, mask=y_in, other=0)
        wy = tl.load(row_weight_ptr + ys * KY + ky, mask=y_in, other=0)
        h_red = tl.full((BY, BX), _HALF, tl.int32)
        h_green = tl.full((BY, BX), _HALF, tl.int32)
        h_blue = tl.full((BY, BX), _HALF, tl.int32)
        for kx in tl.static_range(KX):
            col = tl.load(col_index_ptr + xs * KX + kx, mask=x_in, other=0)
            wx = tl.load(col_weight_ptr + xs * KX + kx, mask=x_in, other=0)[None, :]
            pixel = image_ptr + row[:, None].to(tl.int64) * stride_y + col[None, :] * 3
            h_red += tl.load(pixel, mask=inside, other=0).to(tl.int32) * wx
            h_green += tl.load(pixel + 1, mask=inside, other=0).to(tl.int32) * wx
            h_blue += tl.load(pixel + 2, mask=inside, other=0).to(tl.int32) * wx
        red += _clip8(h_red) * wy[:, None]
        green += _clip8(h_green) * wy[:, None]
        blue += _clip8(h_blue) * wy[:, None]
    at = out_ptr + ys[:, None] * S + xs[None, :]
    fits = (ys < S)[:, None] & (xs < S)[None, :]
    tl.store(at, tl.where(inside, tl.div_rn(_clip8(red).to(tl.float32) - mean0, std0), 0.0), mask=fits)
    tl.store(at + S * S, tl.where(inside, tl.div_rn(_clip8(green).to(tl.float32) - mean1, std1), 0.0), mask=fits)
    tl.store(at + 2 * S * S, tl.where(inside, tl.div_rn(_clip8(blue).to(tl.float32) - mean2, std2), 0.0),
             mask=fits)


def tap_bucket(taps: int) -> int:
    """Column taps rounded up to a multiple of 4 (1 stays 1): the kernel is compiled once per tap
    count, and images of a thousand sizes would otherwise compile ten or more (0.3-0.5 s each on
    an H200) at arbitrary moments of a run; unused taps weigh 0, so sums are unchanged."""
    return taps if taps == 1 else -(-taps // 4) * 4


def _dense_taps(in_size: int, out_size: int, device: torch.device,
                bucketed: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Pillow's taps as (out_size, K) int32 source indices and weights (unused taps: index 0,
    weight 0; K rounded up by ``tap_bucket`` when ``bucketed``); an axis that keeps its size is
    one tap of weight 2**22 (the pixel itself)."""
    if in_size == out_size:
        index = np.arange(out_size, dtype=np.int32)[:, None]
        weight = np.full((out_size, 1), 1 << PRECISION_BITS, dtype=np.int32)
    else:
        rows, cols, values = pil_bilinear_taps(in_size, out_size)
        counts = np.bincount(rows, minlength=out_size)
        k = int(counts.max())
        k = tap_bucket(k) if bucketed else k
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)  # rows come in order
        index = np.zeros((out_size, k), dtype=np.int32)
        weight = np.zeros((out_size, k), dtype=np.int32)
        index[rows, slot] = cols
        weight[rows, slot] = values.astype(np.int32)
    return upload(index, device), upload(weight, device), index.shape[1]


@lru_cache(maxsize=32)
def _taps(in_size: int, out_size: int, device: torch.device,
          bucketed: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``_dense_taps`` kept on the device for the next crop of the same size (a few crop sizes per image size)."""
    return _dense_taps(in_size, out_size, device, bucketed)


def resize_normalise_pad(crop: torch.Tensor, height: int, width: int, size: int, mean: tuple[float, ...],
                         std: tuple[float, ...], out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) crop (a view is fine: rows may be strided, pixels must be contiguous) ->
    float32 (3, size, size): Pillow's bilinear resize to (height, width), ``(x - mean) / std`` per
    channel, zeros below and right. Writes into ``out`` (a (3, size, size) slot) when given."""
    if crop.dtype != torch.uint8 or crop.dim() != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) crop, got {crop.dtype} {tuple(crop.shape)}")
    if crop.stride(2) != 1 or crop.stride(1) != 3:
        crop = crop.contiguous()
    if not (0 < height <= size and 0 < width <= size):
        raise ValueError(f"resized shape {height}x{width} must fit the {size}x{size} input")
    if out is None:
        out = torch.empty((3, size, size), dtype=torch.float32, device=crop.device)
    row_index, row_weight, ky = _taps(crop.shape[0], height, crop.device)
    col_index, col_weight, kx = _taps(crop.shape[1], width, crop.device, bucketed=True)  # KX is compiled in
    block = 32
    grid = (triton.cdiv(size, block), triton.cdiv(size, block))
    f32 = [float(np.float32(v)) for v in (*mean, *std)]
    _resize_normalise_kernel[grid](crop, out, row_index, row_weight, col_index, col_weight, crop.stride(0),
                                   height, width, ky, *f32, KX=kx, S=size, BY=block, BX=block, num_warps=4)
    return out
