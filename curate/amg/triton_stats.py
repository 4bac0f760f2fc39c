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

import numpy as np
import torch
import triton
import triton.language as tl

from curate.amg.grid import resized_shape
from curate.amg.triton_env import INTERPRETED

BIG = 2**30
_BIG = tl.constexpr(BIG)  # kernels may read module constants only as constexpr


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
def _chain(pos, size, mid, scale2, scale1, LS: tl.constexpr):
    """Output pixels along one axis -> intermediate indices (lower, upper, weight of upper) -> the
    low-res indices and weights of each."""
    a0, a1, l2 = _source_index(tl.minimum(pos, size - 1), scale2, mid)
    i00, i01, l00 = _source_index(a0, scale1, LS)
    i10, i11, l10 = _source_index(a1, scale1, LS)
    return l2, i00, i01, l00, i10, i11, l10


@triton.jit
def _axis(start, size, mid, scale2, scale1, LS: tl.constexpr, B: tl.constexpr, SPAN: tl.constexpr):
    """One axis of a tile: pixel positions, which are inside the crop, the last one, the low-res
    index range they read (lo, hi), the SPAN low-res indices from lo, and the (B, SPAN) weights."""
    pos = start + tl.arange(0, B)
    ok = pos < size
    last = tl.minimum(start + B, size) - 1
    l2, i00, i01, l00, i10, i11, l10 = _chain(pos, size, mid, scale2, scale1, LS)
    lo = tl.min(tl.where(ok, i00, LS))
    hi = tl.max(tl.where(ok, i11, 0))
    span = lo + tl.arange(0, SPAN)
    return pos, ok, last, lo, hi, span, _weight_matrix(l2, i00, i01, l00, i10, i11, l10, span)


@triton.jit
def _pixels_by_gathers(base, ys, H, HM, s2y, xs, W, WM, s2x, scale1, LS: tl.constexpr):
    """Every pixel of a tile interpolated as the references do (16 reads each); for tiles whose
    low-res rectangle is too large for the matrix form (crops far smaller than the prompt frame)."""
    ly, i00, i01, ly00, i10, i11, ly10 = _chain(ys, H, HM, s2y, scale1, LS)
    lx, j00, j01, lx00, j10, j11, lx10 = _chain(xs, W, WM, s2x, scale1, LS)
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
def _split(x, SPLIT: tl.constexpr):
    """x = hi + lo with hi exact in TF32 (10-bit mantissa), for float32-accurate products on tensor cores."""
    if SPLIT:
        hi = (x.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
        return hi, x - hi
    return x, x


@triton.jit
def _dot(a_hi, a_lo, b_hi, b_lo, SPLIT: tl.constexpr):
    """a @ b to about float32 accuracy: three TF32 products of the split operands (the smallest,
    lo @ lo, is dropped), or one IEEE product where tensor cores are not used (the interpreter)."""
    if SPLIT:
        acc = tl.dot(a_lo, b_hi, input_precision="tf32")
        acc = tl.dot(a_hi, b_lo, acc, input_precision="tf32")
        return tl.dot(a_hi, b_hi, acc, input_precision="tf32")
    return tl.dot(a_hi, b_hi, input_precision="ieee")


# crop sizes vary per image: without this Triton would compile a variant per divisibility pattern
@triton.jit(do_not_specialize=["n_masks", "H", "W", "HM", "WM"])
def _mask_stats_kernel(logits_ptr, index_ptr, out_ptr, n_masks, H, W, HM, WM, s2y, s2x, scale1,
                       thr_high, thr_low, thr, safe_high, safe_low, LS: tl.constexpr, BY: tl.constexpr,
                       BX: tl.constexpr, RB: tl.constexpr, CB: tl.constexpr, G: tl.constexpr,
                       SPLIT: tl.constexpr):
    """One band of BY rows of G masks that share a crop size: the interpolation weights of each
    tile are built once and used for all G masks."""
    y0 = tl.program_id(1) * BY
    slots = tl.arange(0, G)
    first = tl.program_id(0) * G
    valid = first + slots < n_masks
    mask_ids = tl.load(index_ptr + first + slots, mask=valid, other=0)
    ys, y_ok, y_last, i_lo, i_hi, rows, row_w = _axis(y0, H, HM, s2y, scale1, LS, BY, RB)
    row_hi, row_lo = _split(row_w, SPLIT)

    n_high = tl.zeros([G], tl.int32)
    n_low = tl.zeros([G], tl.int32)
    n_mask = tl.zeros([G], tl.int32)
    x_min = tl.full([G], _BIG, tl.int32)
    y_min = tl.full([G], _BIG, tl.int32)
    x_max = tl.full([G], -1, tl.int32)
    y_max = tl.full([G], -1, tl.int32)
    for x0 in range(0, W, BX):
        xs, x_ok, x_last, j_lo, j_hi, cols, col_w = _axis(x0, W, WM, s2x, scale1, LS, BX, CB)
        inside = (rows[:, None] <= i_hi) & (cols[None, :] <= j_hi)
        bounded = (i_hi - i_lo < RB) & (j_hi - j_lo < CB)
        col_hi, col_lo = _split(tl.trans(col_w), SPLIT)
        ok = y_ok[:, None] & x_ok[None, :]
        full_tile = (y_last - y0 + 1) * (x_last - x0 + 1)
        for g in range(G):
            if first + g < n_masks:
                here = slots == g
                base = logits_ptr + tl.load(index_ptr + first + g).to(tl.int64) * LS * LS
                block = tl.load(base + rows[:, None] * LS + cols[None, :], mask=inside, other=0.0).to(tl.float32)
                v_min = tl.min(tl.where(inside, block, float("inf")))
                v_max = tl.max(tl.where(inside, block, -float("inf")))
                if (v_min > safe_high) & bounded:
                    n_high = tl.where(here, n_high + full_tile, n_high)
                    n_low = tl.where(here, n_low + full_tile, n_low)
                    n_mask = tl.where(here, n_mask + full_tile, n_mask)
                    x_min = tl.where(here, tl.minimum(x_min, x0), x_min)
                    y_min = tl.where(here, tl.minimum(y_min, y0), y_min)
                    x_max = tl.where(here, tl.maximum(x_max, x_last), x_max)
                    y_max = tl.where(here, tl.maximum(y_max, y_last), y_max)
                elif (not bounded) | (v_max > safe_low):
                    if bounded:
                        # the tile = (row weights) @ block @ (column weights)^T: two small matrix products
                        block_hi, block_lo = _split(block, SPLIT)
                        along_x = _dot(block_hi, block_lo, col_hi, col_lo, SPLIT)
                        along_hi, along_lo = _split(along_x, SPLIT)
                        value = _dot(row_hi, row_lo, along_hi, along_lo, SPLIT)
                    else:
                        value = _pixels_by_gathers(base, ys, H, HM, s2y, xs, W, WM, s2x, scale1, LS)
                    hit = (value > thr) & ok
                    # one packed reduction for the three counts (each at most BY*BX < 2**20 per tile)
                    packed = ((value > thr_high) & ok).to(tl.int64) + (((value > thr_low) & ok).to(tl.int64) << 20) \
                        + (hit.to(tl.int64) << 40)
                    total = tl.sum(packed)
                    n_high = tl.where(here, n_high + (total & 0xFFFFF).to(tl.int32), n_high)
                    n_low = tl.where(here, n_low + ((total >> 20) & 0xFFFFF).to(tl.int32), n_low)
                    n_mask = tl.where(here, n_mask + (total >> 40).to(tl.int32), n_mask)
                    hit_rows = tl.max(hit.to(tl.int32), axis=1) > 0
                    hit_cols = tl.max(hit.to(tl.int32), axis=0) > 0
                    x_min = tl.where(here, tl.minimum(x_min, tl.min(tl.where(hit_cols, xs, _BIG))), x_min)
                    y_min = tl.where(here, tl.minimum(y_min, tl.min(tl.where(hit_rows, ys, _BIG))), y_min)
                    x_max = tl.where(here, tl.maximum(x_max, tl.max(tl.where(hit_cols, xs, -1))), x_max)
                    y_max = tl.where(here, tl.maximum(y_max, tl.max(tl.where(hit_rows, ys, -1))), y_max)
    write = valid & (n_low > 0)
    at = out_ptr + mask_ids.to(tl.int64) * 7
    tl.atomic_add(at + 0, n_high, mask=write)
    tl.atomic_add(at + 1, n_low, mask=write)
    tl.atomic_add(at + 2, n_mask, mask=write)
    tl.atomic_min(at + 3, x_min, mask=write)
    tl.atomic_min(at + 4, y_min, mask=write)
    tl.atomic_max(at + 5, x_max, mask=write)
    tl.atomic_max(at + 6, y_max, mask=write)


def _source_span(out_size: int, in_size: int, scale1: float, ls: int, block: int) -> int:
    """Most low-res rows (or columns) that one block of ``block`` output rows interpolates from,
    by the kernel's own index rule evaluated for every output row."""
    dst = np.arange(out_size, dtype=np.float32)
    scale2 = np.float32(in_size) / np.float32(out_size)

    def index(d, scale, size):
        src = np.maximum((d + np.float32(0.5)) * np.float32(scale) - np.float32(0.5), np.float32(0))
        lower = src.astype(np.int64)
        return lower, lower + (lower < size - 1)

    a0, a1 = index(dst, scale2, in_size)
    first = index(a0.astype(np.float32), scale1, ls)[0]
    last = index(a1.astype(np.float32), scale1, ls)[1]
    starts = np.arange(0, out_size, block)
    ends = np.minimum(starts + block, out_size) - 1
    return int((last[ends] - first[starts]).max()) + 1


def _block_side(span: int) -> int:
    """Smallest power of two >= span and >= 16 (tensor-core products need 16)."""
    return max(16, 1 << (span - 1).bit_length())


def mask_stats_triton(low_res: torch.Tensor, crop_hws: torch.Tensor, prompt_size: int, threshold: float,
                      offset: float, block_rows: int = 64, block_cols: int = 64, group: int = 1,
                      split: bool | None = None, num_warps: int = 4) -> torch.Tensor:
    """Defaults: the fastest of benchmarks/amg_profile.py's sweep on an H100 (64x64 tiles, 4 warps,
    one mask per program). group: masks of one crop size per program (interpolation weights built once).
    split: products as three TF32 products of split operands (default on CUDA); else one IEEE product."""
    n, ls, ls2 = low_res.shape
    if ls != ls2:
        raise ValueError(f"low-res logits must be square, got {tuple(low_res.shape)}")
    out = torch.tensor([0, 0, 0, BIG, BIG, -1, -1], dtype=torch.int32, device=low_res.device).repeat(n, 1)
    if n == 0:
        return out.long()
    low_res = low_res.contiguous()
    high, low = threshold + offset, threshold - offset
    # Tiles are skipped only when every source value clears the threshold by more than float32
    # rounding of two chained interpolations could move a pixel (relative 1e-4 is ~1000 ulps).
    safe_high = high + 1e-4 * (1 + abs(high))
    safe_low = low - 1e-4 * (1 + abs(low))
    scale1 = float(np.float32(ls) / np.float32(prompt_size))
    if split is None:
        split = not INTERPRETED
    shapes, owner = torch.unique(crop_hws, dim=0, return_inverse=True)
    for k, (h, w) in enumerate(shapes.tolist()):
        index = (owner == k).nonzero().squeeze(1).to(torch.int32)
        hm, wm = resized_shape(h, w, prompt_size)
        # low-res block per tile, sized for this crop; a larger span (crops far smaller than the
        # prompt frame) is evaluated pixel by pixel instead
        rb = min(64, _block_side(_source_span(h, hm, scale1, ls, block_rows)))
        cb = min(128, _block_side(_source_span(w, wm, scale1, ls, block_cols)))
        grid = (triton.cdiv(len(index), group), triton.cdiv(h, block_rows))
        _mask_stats_kernel[grid](
            low_res, index, out, len(index), h, w, hm, wm, float(np.float32(hm) / np.float32(h)),
            float(np.float32(wm) / np.float32(w)), scale1, high, low, threshold, safe_high, safe_low,
            LS=ls, BY=block_rows, BX=block_cols, RB=rb, CB=cb, G=group, SPLIT=split, num_warps=num_warps,
        )
    out = out.long()
    empty = out[:, 2] == 0
    out[empty, 3:] = 0
    return out
