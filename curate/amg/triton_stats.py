"""Fused Triton kernel for ``curate.amg.mask_stats`` (imported only where Triton is installed).

One program handles one mask and one band of BY output rows, walking the band in tiles of BX
columns. Per tile it finds the low-res rectangle the tile's pixels interpolate from (indices are
monotone in the pixel coordinates), and:
- if every low-res value there is above the highest threshold (plus a rounding margin), every pixel
  counts for all three thresholds and the tile's extent joins the box, without visiting pixels;
- if every value is at or below the lowest threshold (minus the margin), nothing counts;
- otherwise the tile's pixels are interpolated as the references do (bilinear 256 -> prompt frame,
  cut the padding, bilinear -> crop size; PyTorch's align_corners=False source-index rule), written
  as two small matrix products (row weights) @ low-res block @ (column weights)^T on tensor cores
  with float32 accuracy (3 TF32 products), and counted. Summation order differs from the
  references', so a pixel within float32 rounding of a threshold may land on the other side.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import triton
import triton.language as tl

from curate.amg.grid import resized_shape

BIG = 2**30
_BIG = tl.constexpr(BIG)  # kernels may read module constants only as constexpr
# fp32-accurate products on tensor cores (3 TF32 products); the interpreter computes in float32
PRECISION = tl.constexpr("ieee" if os.environ.get("TRITON_INTERPRET") == "1" else "tf32x3")


@triton.jit
def _source_index(dst, scale, in_size):
    """PyTorch's bilinear source index (align_corners=False): lower index, upper index, weight of upper."""
    src = tl.maximum((dst.to(tl.float32) + 0.5) * scale - 0.5, 0.0)
    lower = src.to(tl.int32)
    upper = lower + (lower < in_size - 1).to(tl.int32)
    return lower, upper, src - lower.to(tl.float32)


@triton.jit
def _intermediate(base, rows0, rows1, wr1, cols0, cols1, wc1, LS: tl.constexpr):
    """Values of the prompt-frame upscale at (rows, cols), from the low-res logits."""
    a = tl.load(base + rows0 * LS + cols0).to(tl.float32)
    b = tl.load(base + rows0 * LS + cols1).to(tl.float32)
    c = tl.load(base + rows1 * LS + cols0).to(tl.float32)
    d = tl.load(base + rows1 * LS + cols1).to(tl.float32)
    wr0 = 1.0 - wr1
    wc0 = 1.0 - wc1
    return wr0 * (wc0 * a + wc1 * b) + wr1 * (wc0 * c + wc1 * d)


@triton.jit
def _weight_matrix(l2, i00, i01, l00, i10, i11, l10, cols):
    """(pixels, rect) weights of the two chained interpolations, for pixels of one axis: pixel ->
    (lower, upper) intermediate indices with weight l2 of upper -> their low-res indices."""
    c = cols[None, :]
    lower = (1.0 - l00)[:, None] * (i00[:, None] == c).to(tl.float32) + l00[:, None] * (i01[:, None] == c).to(tl.float32)
    upper = (1.0 - l10)[:, None] * (i10[:, None] == c).to(tl.float32) + l10[:, None] * (i11[:, None] == c).to(tl.float32)
    return (1.0 - l2)[:, None] * lower + l2[:, None] * upper


@triton.jit
def _pixels_by_gathers(base, ly, i00, i01, ly00, i10, i11, ly10, lx, j00, j01, lx00, j10, j11, lx10,
                       LS: tl.constexpr):
    """Every pixel of a tile interpolated as the references do (16 reads each); for tiles whose
    low-res rectangle is too large for the matrix form (crops far smaller than the prompt frame)."""
    r0, r1, c0, c1 = i00[:, None], i01[:, None], j00[None, :], j01[None, :]
    m00 = _intermediate(base, r0, r1, ly00[:, None], c0, c1, lx00[None, :], LS)
    c0, c1 = j10[None, :], j11[None, :]
    m01 = _intermediate(base, r0, r1, ly00[:, None], c0, c1, lx10[None, :], LS)
    r0, r1 = i10[:, None], i11[:, None]
    m11 = _intermediate(base, r0, r1, ly10[:, None], c0, c1, lx10[None, :], LS)
    c0, c1 = j00[None, :], j01[None, :]
    m10 = _intermediate(base, r0, r1, ly10[:, None], c0, c1, lx00[None, :], LS)
    wy1 = ly[:, None]
    wx1 = lx[None, :]
    return (1.0 - wy1) * ((1.0 - wx1) * m00 + wx1 * m01) + wy1 * ((1.0 - wx1) * m10 + wx1 * m11)


@triton.jit
def _mask_stats_kernel(logits_ptr, geom_ptr, scale_ptr, out_ptr, scale1, thr_high, thr_low, thr,
                       safe_high, safe_low, LS: tl.constexpr, BY: tl.constexpr, BX: tl.constexpr,
                       RB: tl.constexpr, CB: tl.constexpr):
    n = tl.program_id(0)
    y0 = tl.program_id(1) * BY
    H = tl.load(geom_ptr + n * 4 + 0)
    W = tl.load(geom_ptr + n * 4 + 1)
    HM = tl.load(geom_ptr + n * 4 + 2)
    WM = tl.load(geom_ptr + n * 4 + 3)
    if y0 < H:
        s2y = tl.load(scale_ptr + n * 2 + 0)
        s2x = tl.load(scale_ptr + n * 2 + 1)
        base = logits_ptr + n.to(tl.int64) * LS * LS
        ys = y0 + tl.arange(0, BY)
        y_ok = ys < H
        y_last = tl.minimum(y0 + BY, H) - 1
        # output row -> intermediate rows (a0, a1) -> low-res rows of each
        a0, a1, ly = _source_index(tl.minimum(ys, H - 1), s2y, HM)
        i00, i01, ly00 = _source_index(a0, scale1, LS)
        i10, i11, ly10 = _source_index(a1, scale1, LS)
        i_lo = tl.min(tl.where(y_ok, i00, LS))
        i_hi = tl.max(tl.where(y_ok, i11, 0))
        rows = i_lo + tl.arange(0, RB)

        n_high = tl.full([], 0, tl.int32)
        n_low = tl.full([], 0, tl.int32)
        n_mask = tl.full([], 0, tl.int32)
        x_min = tl.full([], _BIG, tl.int32)
        y_min = tl.full([], _BIG, tl.int32)
        x_max = tl.full([], -1, tl.int32)
        y_max = tl.full([], -1, tl.int32)
        for x0 in range(0, W, BX):
            xs = x0 + tl.arange(0, BX)
            x_ok = xs < W
            x_last = tl.minimum(x0 + BX, W) - 1
            b0, b1, lx = _source_index(tl.minimum(xs, W - 1), s2x, WM)
            j00, j01, lx00 = _source_index(b0, scale1, LS)
            j10, j11, lx10 = _source_index(b1, scale1, LS)
            j_lo = tl.min(tl.where(x_ok, j00, LS))
            j_hi = tl.max(tl.where(x_ok, j11, 0))
            cols = j_lo + tl.arange(0, CB)
            inside = (rows[:, None] <= i_hi) & (cols[None, :] <= j_hi)
            block = tl.load(base + rows[:, None] * LS + cols[None, :], mask=inside, other=0.0).to(tl.float32)
            v_min = tl.min(tl.where(inside, block, float("inf")))
            v_max = tl.max(tl.where(inside, block, -float("inf")))
            unbounded = (i_hi - i_lo >= RB) | (j_hi - j_lo >= CB)
            if (v_min > safe_high) & (i_hi - i_lo < RB) & (j_hi - j_lo < CB):
                count = (y_last - y0 + 1) * (x_last - x0 + 1)
                n_high += count
                n_low += count
                n_mask += count
                x_min = tl.minimum(x_min, x0)
                y_min = tl.minimum(y_min, y0)
                x_max = tl.maximum(x_max, x_last)
                y_max = tl.maximum(y_max, y_last)
            elif unbounded | (v_max > safe_low):
                if unbounded:
                    value = _pixels_by_gathers(base, ly, i00, i01, ly00, i10, i11, ly10,
                                               lx, j00, j01, lx00, j10, j11, lx10, LS)
                else:
                    # the tile = (row weights) @ block @ (column weights)^T: two small matrix products
                    row_w = _weight_matrix(ly, i00, i01, ly00, i10, i11, ly10, rows)
                    col_w = _weight_matrix(lx, j00, j01, lx00, j10, j11, lx10, cols)
                    along_x = tl.dot(block, tl.trans(col_w), input_precision=PRECISION)
                    value = tl.dot(row_w, along_x, input_precision=PRECISION)
                ok = y_ok[:, None] & x_ok[None, :]
                hit = (value > thr) & ok
                # one packed reduction for the three counts (each at most BY*BX < 2**20 per tile)
                packed = ((value > thr_high) & ok).to(tl.int64) + (((value > thr_low) & ok).to(tl.int64) << 20) \
                    + (hit.to(tl.int64) << 40)
                total = tl.sum(packed)
                n_high += (total & 0xFFFFF).to(tl.int32)
                n_low += ((total >> 20) & 0xFFFFF).to(tl.int32)
                n_mask += (total >> 40).to(tl.int32)
                hit_rows = tl.max(hit.to(tl.int32), axis=1) > 0
                hit_cols = tl.max(hit.to(tl.int32), axis=0) > 0
                x_min = tl.minimum(x_min, tl.min(tl.where(hit_cols, xs, _BIG)))
                y_min = tl.minimum(y_min, tl.min(tl.where(hit_rows, ys, _BIG)))
                x_max = tl.maximum(x_max, tl.max(tl.where(hit_cols, xs, -1)))
                y_max = tl.maximum(y_max, tl.max(tl.where(hit_rows, ys, -1)))
        if n_low > 0:
            tl.atomic_add(out_ptr + n * 7 + 0, n_high)
            tl.atomic_add(out_ptr + n * 7 + 1, n_low)
            tl.atomic_add(out_ptr + n * 7 + 2, n_mask)
            tl.atomic_min(out_ptr + n * 7 + 3, x_min)
            tl.atomic_min(out_ptr + n * 7 + 4, y_min)
            tl.atomic_max(out_ptr + n * 7 + 5, x_max)
            tl.atomic_max(out_ptr + n * 7 + 6, y_max)


def _geometry(crop_hws: torch.Tensor, prompt_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask int32 (H, W, HM, WM) and float32 stage-2 scales (HM/H, WM/W) rounded as PyTorch does."""
    hw = crop_hws.cpu().numpy().astype(np.int64)
    shapes, inverse = np.unique(hw, axis=0, return_inverse=True)
    inner = np.array([resized_shape(int(h), int(w), prompt_size) for h, w in shapes], dtype=np.int64)
    geom = np.concatenate([shapes, inner], axis=1)[inverse.reshape(-1)]
    scales = (geom[:, 2:4].astype(np.float32) / geom[:, 0:2].astype(np.float32)).astype(np.float32)
    device = crop_hws.device
    return (torch.from_numpy(geom.astype(np.int32)).to(device), torch.from_numpy(scales).to(device))


def mask_stats_triton(low_res: torch.Tensor, crop_hws: torch.Tensor, prompt_size: int, threshold: float,
                      offset: float, block_rows: int = 32, block_cols: int = 128) -> torch.Tensor:
    n, ls, ls2 = low_res.shape
    if ls != ls2:
        raise ValueError(f"low-res logits must be square, got {tuple(low_res.shape)}")
    out = torch.tensor([0, 0, 0, BIG, BIG, -1, -1], dtype=torch.int32, device=low_res.device).repeat(n, 1)
    if n == 0:
        return out.long()
    geom, scales = _geometry(crop_hws, prompt_size)
    max_h = int(crop_hws[:, 0].max())
    high, low = threshold + offset, threshold - offset
    # Tiles are skipped only when every source value clears the threshold by more than float32
    # rounding of two chained interpolations could move a pixel (relative 1e-4 is ~1000 ulps).
    safe_high = high + 1e-4 * (1 + abs(high))
    safe_low = low - 1e-4 * (1 + abs(low))
    # Rows/cols of low-res values one tile reads: at most BY * (HM/H) / 4 + 3 when the crop is at
    # least a quarter of the prompt frame; larger spans fall back to per-pixel evaluation.
    grid = (n, triton.cdiv(max_h, block_rows))
    _mask_stats_kernel[grid](
        low_res.contiguous(), geom, scales, out, float(np.float32(ls) / np.float32(prompt_size)),
        high, low, threshold, safe_high, safe_low, LS=ls, BY=block_rows, BX=block_cols, RB=16, CB=64,
        num_warps=8,
    )
    out = out.long()
    empty = out[:, 2] == 0
    out[empty, 3:] = 0
    return out
