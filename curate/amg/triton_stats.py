"""Fused Triton kernel for ``curate.amg.mask_stats`` (imported only where Triton is installed).

One program handles one mask and one band of BY output rows, walking the band in tiles of BX
columns. The low-res rectangle each tile's pixels interpolate from (indices are monotone in the
pixel coordinates) and the column weights are the same for every mask and band of a crop size, so
a small kernel tabulates them once per size. Per tile:
- if every low-res value there is above the highest threshold (plus a rounding margin), every pixel
  counts for all three thresholds and the tile's extent joins the box, without visiting pixels;
- if every value is at or below the lowest threshold (minus the margin), nothing counts;
- the two tests above are skipped once 8 tiles in a row of a band straddled the thresholds (then
  made on every 8th tile only, until one passes): on noise-like masks they never pay;
- otherwise the tile's pixels are interpolated as the references do (bilinear 256 -> prompt frame,
  cut the padding, bilinear -> crop size; PyTorch's align_corners=False source-index rule), written
  as two small matrix products (row weights) @ low-res block @ (column weights)^T on tensor cores
  (float32 logits: float32 accuracy from 3 TF32 products; half-precision logits: one product of
  float16 operands, logits clamped to float16's range, +-65504), and counted, each row's three
  counts in one packed reduction. Crops far smaller than the prompt frame, whose tiles read more
  low-res values than a block holds, take every pixel by gathers instead (chosen per launch: both
  forms in one kernel cost the matrix form registers).
Each tile's table entry and low-res block are read while the tile before it is evaluated, and so
are its column weights when the tile before was not skipped (runs of mixed tiles, as on noise
masks; smooth masks' skipped tiles read no weights ahead). Counts are kept per row and reduced
over the band once, at its end; in half-precision runs they are taken on tensor cores from float16
comparisons (see ``_mask_stats_kernel``). Of the box's columns only the band's first and last
tiles with mask pixels are looked at again, once.
Summation order differs from the references', so a pixel within float32 rounding of a threshold
may land on the other side; in half precision, also one within half a float16 ulp above it
(about 5e-4 relative: the logits themselves are bf16, 4e-3).
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
INTERPRETED_STATS = tl.constexpr(INTERPRETED)


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
def _split(x, MODE: tl.constexpr):
    """x = hi + lo with hi exact in TF32 (10-bit mantissa), for float32-accurate products on tensor
    cores (MODE 3); MODE 2: x rounded to float16, the product's operand (x within float16's range:
    weights, logits clamped by ``_tile_values``, and convex combinations of those); other modes use
    x as it is."""
    if MODE == 3:
        hi = (x.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
        lo = x - hi
    elif MODE == 2:
        hi = x.to(tl.float16)
        lo = hi
    else:
        hi = x
        lo = x
    return hi, lo


@triton.jit
def _dot(a_hi, a_lo, b_hi, b_lo, MODE: tl.constexpr):
    """a @ b. MODE 3: about float32 accuracy from three TF32 products of the split operands (the
    smallest, lo @ lo, is dropped); MODE 2: one float16 product (half-precision logits): float16
    keeps TF32's 11 significant bits, rounded to nearest where TF32 truncates, and the tensor cores
    take it at twice TF32's rate; MODE 1: one TF32 product; MODE 0: one IEEE product (the
    interpreter)."""
    if MODE == 3:
        acc = tl.dot(a_lo, b_hi, input_precision="tf32")
        acc = tl.dot(a_hi, b_lo, acc, input_precision="tf32")
        return tl.dot(a_hi, b_hi, acc, input_precision="tf32")
    elif MODE == 2:
        return tl.dot(a_hi, b_hi)
    elif MODE == 1:
        return tl.dot(a_hi, b_hi, input_precision="tf32")
    else:
        return tl.dot(a_hi, b_hi, input_precision="ieee")


@triton.jit
def _above_half(value, low_pair, mask_pair, high_pair):
    """value (float32) above each threshold, compared in float16 two at a time (set.gt.f16x2:
    1.0 or 0.0 per half, the tensor-core tally's operand as it is). The thresholds come as
    float16 pairs (int32 bits) and must be exact in float16; rounding value to float16 can only
    miss a pixel within half a float16 ulp above a threshold."""
    if INTERPRETED_STATS:
        v = value.to(tl.float16)
        return ((v > low_pair.to(tl.int16).to(tl.float16, bitcast=True)).to(tl.float16),
                (v > mask_pair.to(tl.int16).to(tl.float16, bitcast=True)).to(tl.float16),
                (v > high_pair.to(tl.int16).to(tl.float16, bitcast=True)).to(tl.float16))
    return tl.inline_asm_elementwise(
        """{
        .reg .b32 v;
        cvt.rn.f16x2.f32 v, $4, $3;
        set.gt.f16x2.f16x2 $0, v, $5;
        set.gt.f16x2.f16x2 $1, v, $7;
        set.gt.f16x2.f16x2 $2, v, $9;
        }""", "=r,=r,=r,r,r,r,r,r,r,r,r", [value, low_pair, mask_pair, high_pair],
        dtype=(tl.float16, tl.float16, tl.float16), is_pure=True, pack=2)


@triton.jit(do_not_specialize=["W", "WM"])
def _column_table_kernel(weights_ptr, meta_ptr, W, WM, s2x, scale1, LS: tl.constexpr, BX: tl.constexpr,
                         CB: tl.constexpr):
    """What every band of every mask needs about column tile program_id(0), computed once per crop
    size: its (BX, CB) column weights (stored as (CB, BX), in the table's dtype), and the low-res
    columns it reads (lo, hi) and its last pixel column."""
    t = tl.program_id(0)
    x0 = t * BX
    xs, x_ok, x_last, j_lo, j_hi, cols, col_w = _axis(x0, W, WM, s2x, scale1, LS, BX, CB)
    k = tl.arange(0, CB)
    tl.store(weights_ptr + t * CB * BX + k[None, :] * BX + tl.arange(0, BX)[:, None],
             col_w.to(weights_ptr.dtype.element_ty))
    tl.store(meta_ptr + t * 4 + 0, j_lo)
    tl.store(meta_ptr + t * 4 + 1, j_hi)
    tl.store(meta_ptr + t * 4 + 2, x_last)


@triton.jit
def _tile_load(base, t, rows, i_hi, k, col_meta_ptr, LS: tl.constexpr, RB: tl.constexpr, CB: tl.constexpr,
               BOUNDED: tl.constexpr):
    """Column tile t of a band: its last pixel column, the low-res columns it reads (lo, hi) and,
    when every tile's low-res block fits (RB, CB) (BOUNDED), that block."""
    x_last = tl.load(col_meta_ptr + t * 4 + 2)
    if BOUNDED:
        j_lo = tl.load(col_meta_ptr + t * 4 + 0)
        j_hi = tl.load(col_meta_ptr + t * 4 + 1)
        cols = j_lo + k
        inside = (rows[:, None] <= i_hi) & (cols[None, :] <= j_hi)
        block = tl.load(base + rows[:, None] * LS + cols[None, :], mask=inside, other=0.0).to(tl.float32)
    else:
        j_lo = x_last * 0
        j_hi = j_lo - 1
        block = tl.zeros([RB, CB], tl.float32)
    return x_last, j_lo, j_hi, block


@triton.jit
def _tile_classify(block, rows, i_lo, i_hi, j_lo, j_hi, k, safe_high, safe_low, classify, BOUNDED: tl.constexpr):
    """If ``classify`` (and BOUNDED), whether every source value of a tile's block clears the high
    bound (the whole tile counts) or none clears the low bound (nothing counts), from one packed
    reduction (not classified: neither, the tile's pixels are looked at)."""
    full = j_lo < 0
    empty = j_lo < 0
    if BOUNDED:
        if classify:
            inside = (rows[:, None] <= i_hi) & ((j_lo + k)[None, :] <= j_hi)
            sides = tl.sum(tl.where(inside, (block > safe_high).to(tl.int32)
                                    + ((block <= safe_low).to(tl.int32) << 16), 0))
            sources = (i_hi - i_lo + 1) * (j_hi - j_lo + 1)
            full = (sides & 65535) == sources
            empty = (sides >> 16) == sources
    return full, empty


@triton.jit
def _tile_columns(col_weights_ptr, t, k, xi, wanted, BX: tl.constexpr, CB: tl.constexpr):
    """Column tile t's (CB, BX) weights from the table (read only where ``wanted``)."""
    return tl.load(col_weights_ptr + t * CB * BX + k[:, None] * BX + xi[None, :], mask=wanted, other=0.0)


@triton.jit
def _tile_source(base, t, rows, i_lo, i_hi, k, col_meta_ptr, safe_high, safe_low, classify, LS: tl.constexpr,
                 RB: tl.constexpr, CB: tl.constexpr, BOUNDED: tl.constexpr):
    """``_tile_load`` and ``_tile_classify`` of tile t: its last pixel column, block, full, empty."""
    x_last, j_lo, j_hi, block = _tile_load(base, t, rows, i_hi, k, col_meta_ptr, LS, RB, CB, BOUNDED)
    full, empty = _tile_classify(block, rows, i_lo, i_hi, j_lo, j_hi, k, safe_high, safe_low, classify, BOUNDED)
    return x_last, block, full, empty


@triton.jit
def _tile_values(base, block, t, row_hi, row_lo, ys, H, HM, s2y, W, WM, s2x, scale1, col_w, xi,
                 LS: tl.constexpr, BX: tl.constexpr, MODE: tl.constexpr, BOUNDED: tl.constexpr):
    """Every pixel of column tile t of a band, interpolated as the references do: (row weights) @
    low-res block @ (column weights)^T on tensor cores, or pixel by pixel where blocks do not fit
    (a compile-time choice: the pixel-by-pixel code would cost the matrix form registers). Columns
    past the crop repeat its last column (mask them). col_w: the tile's weights (``_tile_columns``)."""
    if BOUNDED:
        if MODE == 2:  # only the logits may lie outside float16's range (clamping the products' 1,024
            # intermediate values too cost 44 of the tile loop's 417 instructions)
            block = tl.minimum(tl.maximum(block, -65504.0), 65504.0)
        col_hi, col_lo = _split(col_w, MODE)
        block_hi, block_lo = _split(block, MODE)
        along_x = _dot(block_hi, block_lo, col_hi, col_lo, MODE)
        along_hi, along_lo = _split(along_x, MODE)
        value = _dot(row_hi, row_lo, along_hi, along_lo, MODE)
    else:
        value = _pixels_by_gathers(base, ys, H, HM, s2y, t * BX + xi, W, WM, s2x, scale1, LS)
    return value


@triton.jit
def _tile_hit_extreme(base, t, rows, i_lo, i_hi, row_hi, row_lo, ys, y_ok, H, HM, s2y, W, WM, s2x, scale1, thr,
                      safe_high, safe_low, col_weights_ptr, col_meta_ptr, k, xi, LAST: tl.constexpr,
                      LS: tl.constexpr, BX: tl.constexpr, RB: tl.constexpr, CB: tl.constexpr, MODE: tl.constexpr,
                      BOUNDED: tl.constexpr):
    """The first (or LAST) pixel column of tile t above the mask threshold in any row of the band:
    the tile is evaluated again (same arithmetic as the counting pass) once per band and side."""
    x0 = t * BX
    x_last, block, full, empty = _tile_source(base, t, rows, i_lo, i_hi, k, col_meta_ptr, safe_high, safe_low, t >= 0,
                                              LS, RB, CB, BOUNDED)
    if LAST:
        found = x_last
    else:
        found = x0
    if not full:
        col_w = _tile_columns(col_weights_ptr, t, k, xi, BOUNDED, BX, CB)
        value = _tile_values(base, block, t, row_hi, row_lo, ys, H, HM, s2y, W, WM, s2x, scale1,
                             col_w, xi, LS, BX, MODE, BOUNDED)
        xs = x0 + xi
        hit = (value > thr) & y_ok[:, None] & (xs <= x_last)[None, :]
        if LAST:
            found = tl.max(tl.where(hit, xs[None, :], -1))
        else:
            found = tl.min(tl.where(hit, xs[None, :], _BIG))
    return found


# crop sizes vary per image: without this Triton would compile a variant per divisibility pattern
@triton.jit(do_not_specialize=["H", "W", "HM", "WM"])
def _mask_stats_kernel(logits_ptr, index_ptr, keep_ptr, out_ptr, col_weights_ptr, col_meta_ptr, H, W, HM, WM, s2y,
                       s2x, scale1, thr_high, thr_low, thr, safe_high, safe_low, low_pair, mask_pair, high_pair,
                       LS: tl.constexpr, BY: tl.constexpr, BX: tl.constexpr, RB: tl.constexpr, CB: tl.constexpr,
                       INDEXED: tl.constexpr, FILTERED: tl.constexpr, MODE: tl.constexpr, BOUNDED: tl.constexpr,
                       HALF_TALLY: tl.constexpr, CLASSIFY_RUN: tl.constexpr = 8, CLASSIFY_EVERY: tl.constexpr = 8):
    """One band of BY rows of one mask: mask number program_id(0) (of ``index`` when INDEXED),
    skipped when FILTERED and its ``keep`` flag is 0.

    The pixel loop does as little per pixel as it can (it sets this kernel's pace on masks that
    are not smooth). Float32 comparisons (not HALF_TALLY): three nested comparisons select one
    packed value (the thresholds are ordered), summed per row; counts are kept per row across the
    band's tiles and reduced over the rows once at the end (a reduction over a whole tile makes
    every warp wait for the others). HALF_TALLY (half-precision runs, thresholds exact in float16):
    the tile's values are compared two at a time in float16 (``_above_half``) and the 0/1 planes
    summed per row on tensor cores, (plane j) @ (ones in column j), into one (BY, 16) accumulator
    kept across the band's tiles (columns 0, 1, 2: low, mask, high): about 2 instructions per
    pixel instead of 11 (an H100: 5.1 vs 5.7 ms for 1,728 noise masks of a 2048x1536 crop; the
    same tally with float32 comparisons was slower than the packed form). The box's columns are
    not tracked per pixel: each row notes the first and last tile where it has mask pixels, and
    only the band's first and last such tile are evaluated again for the exact column."""
    if INDEXED:
        mask_id = tl.load(index_ptr + tl.program_id(0))
    else:
        mask_id = tl.program_id(0)
    if FILTERED:
        active = tl.load(keep_ptr + mask_id) != 0
    else:
        active = mask_id >= 0
    if active:
        y0 = tl.program_id(1) * BY
        ys, y_ok, y_last, i_lo, i_hi, rows, row_w = _axis(y0, H, HM, s2y, scale1, LS, BY, RB)
        row_hi, row_lo = _split(row_w, MODE)
        base = logits_ptr + mask_id.to(tl.int64) * LS * LS
        k = tl.arange(0, CB)
        xi = tl.arange(0, BX)
        # per row: pixels above the high / low stability thresholds and the mask threshold, and
        # the first and last tile with a pixel above the mask threshold
        row_high = tl.zeros([BY], tl.int32)
        row_low = tl.zeros([BY], tl.int32)
        row_mask = tl.zeros([BY], tl.int32)
        first_tile = tl.full([BY], _BIG, tl.int32)
        last_tile = tl.full([BY], -1, tl.int32)
        # HALF_TALLY: (BY, 16) counts, rows' first and last tiles with mask pixels in column 1
        col = tl.arange(0, 16)[None, :]
        ones = tl.full([BX, 16], 1.0, tl.float16)
        e_low = tl.where(col == 0, ones, 0.0).to(tl.float16)
        e_mask = tl.where(col == 1, ones, 0.0).to(tl.float16)
        e_high = tl.where(col == 2, ones, 0.0).to(tl.float16)
        tally = tl.zeros([BY, 16], tl.float32)
        first2 = tl.full([BY, 16], _BIG, tl.int32)
        last2 = tl.full([BY, 16], -1, tl.int32)
        row_in = y_ok[:, None] & (col == 1)
        mixed_run = 0  # tiles since the classification last found one wholly on one side
        # each tile's table entry and block are read during the tile before, and so are its column
        # weights when that tile needed its own (a run of mixed tiles, as on noise): the reads'
        # latency hides behind the tile's arithmetic
        tiles = tl.cdiv(W, BX)
        x_last_next, j_lo_next, j_hi_next, block_next = _tile_load(base, 0, rows, i_hi, k, col_meta_ptr, LS, RB, CB,
                                                                   BOUNDED)
        cols_next = _tile_columns(col_weights_ptr, 0, k, xi, BOUNDED, BX, CB)
        have_next = tiles > 0
        for t in range(0, tiles):
            x0 = t * BX
            x_last, j_lo, j_hi, block = x_last_next, j_lo_next, j_hi_next, block_next
            col_w, have_cols = cols_next, have_next
            ahead = tl.minimum(t + 1, tiles - 1)
            x_last_next, j_lo_next, j_hi_next, block_next = _tile_load(base, ahead, rows, i_hi, k, col_meta_ptr,
                                                                       LS, RB, CB, BOUNDED)
            classify = (mixed_run < CLASSIFY_RUN) | (mixed_run % CLASSIFY_EVERY == 0)
            full, empty = _tile_classify(block, rows, i_lo, i_hi, j_lo, j_hi, k, safe_high, safe_low, classify,
                                         BOUNDED)
            mixed_run = tl.where(full | empty, 0, mixed_run + 1)
            have_next = BOUNDED and mixed_run > 0
            cols_next = _tile_columns(col_weights_ptr, ahead, k, xi, have_next, BX, CB)
            if full:  # every pixel counts for all three thresholds
                width = tl.where(y_ok, x_last - x0 + 1, 0)
                if HALF_TALLY:
                    tally += tl.where(col < 3, width[:, None], 0).to(tl.float32)
                    first2 = tl.where(row_in, tl.minimum(first2, t), first2)
                    last2 = tl.where(row_in, t, last2)
                else:
                    row_high += width
                    row_low += width
                    row_mask += width
                    first_tile = tl.where(y_ok, tl.minimum(first_tile, t), first_tile)
                    last_tile = tl.where(y_ok, t, last_tile)
            elif not empty:  # some pixel may count: look at each
                if not have_cols:  # the tile before was skipped: its weights were not read ahead
                    col_w = _tile_columns(col_weights_ptr, t, k, xi, BOUNDED, BX, CB)
                value = _tile_values(base, block, t, row_hi, row_lo, ys, H, HM, s2y, W, WM, s2x, scale1,
                                     col_w, xi, LS, BX, MODE, BOUNDED)
                if x_last < x0 + BX - 1:  # the crop's last tile: columns past it repeat its last one
                    value = tl.where((x0 + xi <= x_last)[None, :], value, -float("inf"))
                if HALF_TALLY:
                    before = tally
                    pairs = tl.full([BY, BX], 0, tl.int32)
                    a_low, a_mask, a_high = _above_half(value, pairs + low_pair, pairs + mask_pair, pairs + high_pair)
                    tally = tl.dot(a_low, e_low, tally)
                    tally = tl.dot(a_mask, e_mask, tally)
                    tally = tl.dot(a_high, e_high, tally)
                    grew = row_in & (tally > before)
                    first2 = tl.where(grew, tl.minimum(first2, t), first2)
                    last2 = tl.where(grew, t, last2)
                else:
                    # fields (10 bits each, BX < 1024): low threshold, mask threshold, high threshold
                    packed = tl.where(value > thr_low, tl.where(value > thr, tl.where(
                        value > thr_high, 1 + (1 << 10) + (1 << 20), 1 + (1 << 10)), 1), 0)
                    per_row = tl.where(y_ok, tl.sum(packed, axis=1), 0)  # rows past the crop repeat its last
                    in_mask = (per_row >> 10) & 1023
                    row_low += per_row & 1023
                    row_mask += in_mask
                    row_high += per_row >> 20
                    first_tile = tl.where(in_mask > 0, tl.minimum(first_tile, t), first_tile)
                    last_tile = tl.where(in_mask > 0, t, last_tile)
        if HALF_TALLY:
            counted = tl.where(y_ok[:, None], tally, 0.0).to(tl.int32)
            row_low = tl.sum(tl.where(col == 0, counted, 0), axis=1)
            row_mask = tl.sum(tl.where(col == 1, counted, 0), axis=1)
            row_high = tl.sum(tl.where(col == 2, counted, 0), axis=1)
            first_tile = tl.min(first2, axis=1)
            last_tile = tl.max(last2, axis=1)
        n_low = tl.sum(row_low)
        if n_low > 0:
            at = out_ptr + mask_id.to(tl.int64) * 7
            tl.atomic_add(at + 0, tl.sum(row_high))
            tl.atomic_add(at + 1, n_low)
            n_mask = tl.sum(row_mask)
            tl.atomic_add(at + 2, n_mask)
            if n_mask > 0:
                x_min = _tile_hit_extreme(base, tl.min(first_tile), rows, i_lo, i_hi, row_hi, row_lo, ys, y_ok, H, HM,
                                          s2y, W, WM, s2x, scale1, thr, safe_high, safe_low, col_weights_ptr,
                                          col_meta_ptr, k, xi, False, LS, BX, RB, CB, MODE, BOUNDED)
                x_max = _tile_hit_extreme(base, tl.max(last_tile), rows, i_lo, i_hi, row_hi, row_lo, ys, y_ok, H, HM,
                                          s2y, W, WM, s2x, scale1, thr, safe_high, safe_low, col_weights_ptr,
                                          col_meta_ptr, k, xi, True, LS, BX, RB, CB, MODE, BOUNDED)
                tl.atomic_min(at + 3, x_min)
                tl.atomic_min(at + 4, tl.min(tl.where(row_mask > 0, ys, _BIG)))
                tl.atomic_max(at + 5, x_max)
                tl.atomic_max(at + 6, tl.max(tl.where(row_mask > 0, ys, -1)))


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


def _half_pair(x: float) -> int | None:
    """x as two float16 halves of one int32 (the half-precision tally's operand), or None when
    float16 cannot hold x exactly."""
    half = np.float16(x)
    if float(half) != x:
        return None
    bits = int(half.view(np.uint16))
    return int(np.uint32(bits | bits << 16).view(np.int32))


def _block_side(span: int) -> int:
    """Smallest power of two >= span and >= 16 (tensor-core products need 16)."""
    return max(16, 1 << (span - 1).bit_length())


PRECISION_MODES = {"ieee": 0, "tf32": 1, "fp16": 2, "tf32x3": 3}


def default_precision(dtype: torch.dtype) -> str:
    """float32 logits: float32-accurate products (3xTF32); half-precision logits: one product of
    float16 operands, whose rounding (about 5e-4 relative) is below that of the logits themselves
    (an H100, 1,728 noise masks of XL1, same process: 4.94 vs 5.40 ms with one TF32 product on a
    2048x1536 crop, 3.02 vs 3.18 ms on a 1286x1030 crop; 12.5-12.7 vs 13.6-13.8 ms per 2K image in
    place; and closer to the references, rounding to nearest where TF32 truncates); the
    interpreter computes exactly."""
    if INTERPRETED:
        return "ieee"
    return "tf32x3" if dtype == torch.float32 else "fp16"


def empty_stats(n: int, device: torch.device) -> torch.Tensor:
    """(n, 7) int32 accumulators: zero counts, box corners at their neutral values."""
    out = torch.zeros((n, 7), dtype=torch.int32, device=device)
    out[:, 3:5] = BIG
    out[:, 5:] = -1
    return out


def finish_stats(out: torch.Tensor) -> torch.Tensor:
    """int32 accumulators -> int64 statistics; an empty mask's box is zeros (no host sync)."""
    out = out.long()
    out[:, 3:] *= (out[:, 2:3] > 0)
    return out


def stats_one_size(low_res: torch.Tensor, hw: tuple[int, int], prompt_size: int, threshold: float,
                   offset: float, out: torch.Tensor, index: torch.Tensor | None = None,
                   keep: torch.Tensor | None = None, block_rows: int = 64, block_cols: int = 64,
                   precision: str | None = None, num_warps: int = 4, max_registers: int | None = 96,
                   **tuning) -> None:
    """Accumulate into ``out`` (from ``empty_stats``) the statistics of masks of one crop size:
    ``index`` (int32) picks masks of low_res (default: all), ``keep`` (bool, one per mask of
    low_res) skips masks in the kernel, without a host sync. ``tuning``: more kernel
    meta-parameters (CLASSIFY_RUN, CLASSIFY_EVERY: experiments; HALF_TALLY: default on for
    half-precision logits when float16 holds the three thresholds exactly). Defaults: the fastest of
    benchmarks/amg_profile.py's sweep on an H100 (64x64 tiles, 4 warps). max_registers: per thread
    (ptxas maxnreg). 96 lets five programs share a multiprocessor instead of four (the kernel waits
    on memory and barriers more than it computes): with the read-ahead of the next tile, which
    needs 131 registers uncapped, an H100 took 9.3 ms per 2K image in place with 96 (a few spilled
    bytes), 10.3 with 104 and 12.5 without the read-ahead at 102."""
    n, ls, ls2 = low_res.shape
    if ls != ls2:
        raise ValueError(f"low-res logits must be square, got {tuple(low_res.shape)}")
    if block_cols >= 1024:
        raise ValueError("block_cols must be below 1024 (10-bit per-row counts)")
    if offset < 0:
        raise ValueError(f"stability score offset must be >= 0 (the kernel nests the thresholds), got {offset}")
    count = n if index is None else len(index)
    if count == 0:
        return
    mode = PRECISION_MODES[precision or default_precision(low_res.dtype)]
    h, w = hw
    high, low = threshold + offset, threshold - offset
    # Tiles are skipped only when every source value clears the threshold by more than the
    # products' rounding could move a pixel (relative 1e-4 is ~1000 float32 ulps; a TF32 or
    # float16 product rounds its operands to 11 significant bits).
    margin = 2e-3 if mode in (1, 2) else 1e-4
    safe_high = high + margin * (1 + abs(high))
    safe_low = low - margin * (1 + abs(low))
    scale1 = float(np.float32(ls) / np.float32(prompt_size))
    hm, wm = resized_shape(h, w, prompt_size)
    # low-res block per tile, sized for this crop; a larger span (crops far smaller than the
    # prompt frame) has every pixel evaluated by gathers instead
    row_span = _source_span(h, hm, scale1, ls, block_rows)
    col_span = _source_span(w, wm, scale1, ls, block_cols)
    rb, cb = min(64, _block_side(row_span)), min(128, _block_side(col_span))
    s2x = float(np.float32(wm) / np.float32(w))
    tiles = triton.cdiv(w, block_cols)
    # float16 products read their column weights as float16 (half the table's reads per tile)
    table_dtype = torch.float16 if mode == 2 else torch.float32
    col_weights = torch.empty((tiles, cb, block_cols), dtype=table_dtype, device=low_res.device)
    col_meta = torch.empty((tiles, 4), dtype=torch.int32, device=low_res.device)
    _column_table_kernel[(tiles,)](col_weights, col_meta, w, wm, s2x, scale1, LS=ls, BX=block_cols, CB=cb)
    # half-precision logits (one TF32 or float16 product already rounds values near the
    # thresholds): the float16 tally, where float16 holds the thresholds exactly
    pairs = [_half_pair(x) for x in (low, threshold, high)]
    tuning.setdefault("HALF_TALLY", mode in (1, 2) and None not in pairs)
    grid = (count, triton.cdiv(h, block_rows))
    _mask_stats_kernel[grid](
        low_res.contiguous(), index if index is not None else out, keep if keep is not None else out, out,
        col_weights, col_meta, h, w, hm, wm, float(np.float32(hm) / np.float32(h)), s2x, scale1,
        high, low, threshold, safe_high, safe_low, *(p or 0 for p in pairs), LS=ls, BY=block_rows, BX=block_cols,
        RB=rb, CB=cb, INDEXED=index is not None, FILTERED=keep is not None, MODE=mode,
        BOUNDED=row_span <= rb and col_span <= cb, num_warps=num_warps,
        **({"maxnreg": max_registers} if max_registers and not INTERPRETED else {}), **tuning,
    )


def mask_stats_triton(low_res: torch.Tensor, crop_hws: torch.Tensor, prompt_size: int, threshold: float,
                      offset: float, keep: torch.Tensor | None = None, **settings) -> torch.Tensor:
    """Statistics of masks of any crop sizes (crop_hws (N, 2)); one launch per size (the sizes
    are read on the host). settings: those of ``stats_one_size``."""
    out = empty_stats(len(low_res), low_res.device)
    shapes, owner = torch.unique(crop_hws, dim=0, return_inverse=True)
    for k, (h, w) in enumerate(shapes.tolist()):
        index = (owner == k).nonzero().squeeze(1).to(torch.int32)
        stats_one_size(low_res, (h, w), prompt_size, threshold, offset, out, index=index, keep=keep, **settings)
    return finish_stats(out)
