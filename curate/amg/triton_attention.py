"""Fused Triton kernels for the decoder's attention between image and prompt tokens (imported only where Triton is
installed).

In each two-way block, every image token (4096 per prompt) attends to the prompt's 7 tokens, the
result is added to the image token and layer-normalised. With the query projection folded into the
keys and the output projection into the values (see decoder.py), that is per image token:

    logits = q @ folded (8 heads x 7 tokens) + bias -> softmax per head -> @ values -> + residual -> LayerNorm

One program takes a few tiles of image tokens of one prompt through all of it and writes the new
image tokens, instead of five separate passes over the (P, 4096, 256) tensors.

Token-to-image attention (the prompt's 7 tokens x 8 heads, each a query of width 256 once the key
projection is folded in, against the 4096 image tokens) adds the positional encoding to the keys
as it reads them, so the image tokens + pe are never written: flash attention (online softmax)
over blocks of image tokens, split in chunks whose partial results a second small kernel merges,
so that a call of a few hundred prompts still fills the GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from curate.amg.triton_env import INTERPRETED, PRECISION, launcher


def _configs() -> list[triton.Config]:
    if INTERPRETED:
        return [triton.Config({"BN": 32, "TILES": 2}, num_warps=4)]
    # the fastest of a sweep on an H100 (P = 288 prompts of XL1, both blocks' forms): 32-token
    # tiles, several per program so that its per-prompt operands are loaded once, the next tile's
    # loads pipelined behind this one's arithmetic (block 1: 0.76 vs 0.93 ms for one tile of 64).
    # Registers capped (maxnreg) so that more programs share a multiprocessor: later blocks, 576
    # prompts, 1.14 vs 1.22 ms at 168; the first block, one tile per program, 0.84 vs 0.88 at 128
    # (in a sweep on random operands; a whole image's profile still shows 13.3 ms for this kernel).
    # 8 and 16 tiles per program read each prompt's operands (48-64 KB) half or a quarter as often
    plain = [triton.Config({"BN": 32, "TILES": t}, num_warps=4, num_stages=st)
             for t, st in ((4, 2), (2, 2), (4, 1), (8, 2), (16, 2), (32, 2), (16, 3))]
    capped = [triton.Config({"BN": 32, "TILES": t}, num_warps=4, num_stages=st, maxnreg=regs)
              for t, st, regs in ((4, 2, 168), (2, 2, 168), (1, 1, 128), (8, 2, 168), (16, 2, 168), (32, 2, 168))]
    return plain + capped


CONFIGS = _configs()
# image tokens per program of the largest configuration: N must be a multiple (SAM's 64 x 64 is);
# pruning the others by N instead (prune_configs_by) broke torch.compile's tracing of the launch
TOKENS_PER_PROGRAM = max(c.kwargs["BN"] * c.kwargs["TILES"] for c in CONFIGS)


@triton.autotune(configs=CONFIGS, key=["N", "DQ", "D", "HEADS", "SLOTS", "HAS_PE", "QUERIES_ARE_RESIDUAL"])
@triton.jit
def _image_to_token_kernel(q_ptr, q_stride, pe_ptr, res_ptr, res_stride, fold_ptr, fold_stride_p, fold_stride_q,
                           fold_stride_s, bias_ptr, val_ptr, bo_ptr,
                           ln_w_ptr, ln_b_ptr, out_ptr, eps, N: tl.constexpr, DQ: tl.constexpr,
                           D: tl.constexpr, HEADS: tl.constexpr, SLOTS: tl.constexpr, HAS_PE: tl.constexpr,
                           QUERIES_ARE_RESIDUAL: tl.constexpr, BN: tl.constexpr, TILES: tl.constexpr):
    """TILES consecutive tiles of BN image tokens of prompt program_id(1)."""
    p = tl.program_id(1).to(tl.int64)
    dq = tl.arange(0, DQ)
    d = tl.arange(0, D)
    hs = tl.arange(0, HEADS * SLOTS)
    fold = tl.load(fold_ptr + p * fold_stride_p + dq[:, None] * fold_stride_q + hs[None, :] * fold_stride_s)
    val = tl.load(val_ptr + p * HEADS * SLOTS * D + hs[:, None] * D + d[None, :])
    bias = tl.load(bias_ptr + p * HEADS * SLOTS + hs)
    out_bias = tl.load(bo_ptr + d).to(tl.float32)
    ln_w = tl.load(ln_w_ptr + d).to(tl.float32)
    ln_b = tl.load(ln_b_ptr + d).to(tl.float32)
    for t in range(TILES):
        n = (tl.program_id(0) * TILES + t) * BN + tl.arange(0, BN)
        if QUERIES_ARE_RESIDUAL:  # later blocks: the image tokens are both, read once
            residual = tl.load(res_ptr + p * res_stride + n[:, None] * D + d[None, :])
            q = residual
        else:
            q = tl.load(q_ptr + p * q_stride + n[:, None] * DQ + dq[None, :])
        if HAS_PE:
            q = (q.to(tl.float32) + tl.load(pe_ptr + n[:, None] * DQ + dq[None, :]).to(tl.float32)).to(q.dtype)
        logits = tl.dot(q, fold, input_precision=PRECISION) + bias[None, :]
        # softmax over each head's token slots (padding slots have bias -inf); reductions over
        # the last axis of (BN, HEADS, SLOTS) cost fewer registers than masked 2-D passes per head
        by_head = tl.reshape(logits, [BN, HEADS, SLOTS])
        weights = tl.exp(by_head - tl.max(by_head, axis=2)[:, :, None])
        probs = tl.reshape(weights / tl.sum(weights, axis=2)[:, :, None], [BN, HEADS * SLOTS])
        x = tl.dot(probs.to(val.dtype), val, input_precision=PRECISION) + out_bias[None, :]
        if not QUERIES_ARE_RESIDUAL:
            residual = tl.load(res_ptr + p * res_stride + n[:, None] * D + d[None, :])
        x += residual.to(tl.float32)
        mean = tl.sum(x, axis=1) / D
        centred = x - mean[:, None]
        var = tl.sum(centred * centred, axis=1) / D
        y = centred / tl.sqrt(var + eps)[:, None] * ln_w[None, :] + ln_b[None, :]
        tl.store(out_ptr + p * N * D + n[:, None] * D + d[None, :], y.to(out_ptr.dtype.element_ty))


def image_to_token_block(queries: torch.Tensor, residual: torch.Tensor, folded: torch.Tensor, bias: torch.Tensor,
                         values: torch.Tensor, out_bias: torch.Tensor, norm: torch.nn.LayerNorm, slots: int,
                         pe: torch.Tensor | None = None, add_pe: bool = False,
                         config: triton.Config | None = None) -> torch.Tensor:
    """norm(residual + softmax_per_head((queries [+ pe]) @ folded + bias) @ values + out_bias).

    queries (P or 1, N, DQ) and residual (P or 1, N, D): a leading 1 is shared by every prompt;
    folded (P, DQ, H*S), bias (P, H*S) float32 with -inf in unused token slots, values (P, H*S, D),
    S = ``slots`` a power of two, folded of any strides; pe (N, D): added to the queries (``add_pe``, needs DQ = D).
    Returns (P, N, D) in values' dtype. Passing the same tensor as queries and residual reads it once.
    config: one of ``CONFIGS`` instead of the autotuned choice (tests check every configuration).
    """
    p, dq, hs = folded.shape
    n, d = residual.shape[1], residual.shape[2]
    if n % 128 or hs % slots or slots & (slots - 1) or (hs // slots) & (hs // slots - 1):
        raise ValueError(f"image-to-token kernel needs N divisible by 128 and power-of-two heads and slots, "
                         f"got N={n}, H*S={hs}, S={slots}")
    whole = TOKENS_PER_PROGRAM if config is None else config.kwargs["BN"] * config.kwargs["TILES"]
    if n % whole:
        raise ValueError(f"image-to-token kernel needs N divisible by {whole} (whole programs), got N={n}")
    if add_pe and (pe is None or dq != d):
        raise ValueError("pe (N, D) is needed to add it, and queries must then have D channels")
    out = torch.empty((p, n, d), dtype=values.dtype, device=values.device)
    same = queries is residual
    queries, residual = queries.contiguous(), residual.contiguous()
    launcher(_image_to_token_kernel, lambda meta: (n // (meta["BN"] * meta["TILES"]), p), config)(
        queries, n * dq if queries.shape[0] > 1 else 0, pe.contiguous() if pe is not None else out,
        residual, n * d if residual.shape[0] > 1 else 0, folded, *folded.stride(), bias.float().contiguous(),
        values.contiguous(), out_bias, norm.weight, norm.bias, out, float(norm.eps),
        N=n, DQ=dq, D=d, HEADS=hs // slots, SLOTS=slots, HAS_PE=add_pe,
        QUERIES_ARE_RESIDUAL=same,
    )
    return out


def _flash_configs() -> list[triton.Config]:
    if INTERPRETED:
        return [triton.Config({"BN": 32}, num_warps=4)]
    # the fastest of a sweep on an H100 (288 prompts of XL1: 0.28 ms with 64 tokens, 3 stages;
    # 0.39 with 2 stages); 4 stages or 128 tokens do not fit in shared memory
    return [triton.Config({"BN": bn}, num_warps=4, num_stages=st) for bn, st in ((64, 3), (32, 3), (64, 2))]


FLASH_CONFIGS = _flash_configs()


@triton.autotune(configs=FLASH_CONFIGS, key=["N", "D", "R", "CHUNK"])
@triton.jit
def _token_to_image_kernel(q_ptr, keys_ptr, pe_ptr, acc_ptr, top_ptr, total_ptr, rows, N: tl.constexpr,
                           D: tl.constexpr, R: tl.constexpr, CHUNK: tl.constexpr, BN: tl.constexpr):
    """Chunk program_id(1) of one prompt's image tokens: unnormalised output, running max and sum
    of its online softmax, for each of the prompt's query rows.

    The logits are two products of tiles as loaded, q @ image^T + q @ pe^T: summing image and pe
    tiles in registers first and multiplying by that sum's transpose was miscompiled on an H100
    in three of five configurations (outputs off by up to 2, different on every run)."""
    p = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    r = tl.arange(0, R)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + p * rows * D + r[:, None] * D + d[None, :], mask=(r < rows)[:, None], other=0.0)
    top = tl.full([R], -float("inf"), tl.float32)
    total = tl.zeros([R], tl.float32)
    acc = tl.zeros([R, D], tl.float32)
    for start in range(chunk * CHUNK, (chunk + 1) * CHUNK, BN):
        n = start + tl.arange(0, BN)
        values = tl.load(keys_ptr + p * N * D + n[:, None] * D + d[None, :])
        pe = tl.load(pe_ptr + n[:, None] * D + d[None, :])
        logits = tl.dot(q, tl.trans(values)) + tl.dot(q, tl.trans(pe))
        new_top = tl.maximum(top, tl.max(logits, axis=1))
        rescale = tl.exp(top - new_top)
        weights = tl.exp(logits - new_top[:, None])
        total = total * rescale + tl.sum(weights, axis=1)
        acc = acc * rescale[:, None] + tl.dot(weights.to(values.dtype), values)
        top = new_top
    at = p * tl.num_programs(1) + chunk
    tl.store(acc_ptr + at * R * D + r[:, None] * D + d[None, :], acc)
    tl.store(top_ptr + at * R + r, top)
    tl.store(total_ptr + at * R + r, total)


@triton.jit
def _merge_chunks_kernel(acc_ptr, top_ptr, total_ptr, out_ptr, rows, CHUNKS: tl.constexpr, R: tl.constexpr,
                         D: tl.constexpr, BR: tl.constexpr):
    """The chunks' online softmaxes of BR query rows of prompt program_id(0), merged: each chunk's
    sum and output rescaled to the largest running max (in torch ops this took 0.17 ms per
    call of 288 prompts, against 0.28 ms for the attention itself)."""
    p = tl.program_id(0).to(tl.int64)
    r = tl.program_id(1) * BR + tl.arange(0, BR)
    d = tl.arange(0, D)
    best = tl.full([BR], -float("inf"), tl.float32)
    for k in tl.static_range(CHUNKS):
        best = tl.maximum(best, tl.load(top_ptr + (p * CHUNKS + k) * R + r))
    total = tl.zeros([BR], tl.float32)
    out = tl.zeros([BR, D], tl.float32)
    for k in tl.static_range(CHUNKS):
        at = (p * CHUNKS + k) * R + r
        weight = tl.exp(tl.load(top_ptr + at) - best)
        total += tl.load(total_ptr + at) * weight
        out += tl.load(acc_ptr + at[:, None] * D + d[None, :]) * weight[:, None]
    out = out / total[:, None]
    tl.store(out_ptr + (p * rows + r[:, None]) * D + d[None, :], out.to(out_ptr.dtype.element_ty),
             mask=(r < rows)[:, None])


def token_to_image_attention(queries: torch.Tensor, image: torch.Tensor, pe: torch.Tensor,
                             chunks: int | None = None, config: triton.Config | None = None) -> torch.Tensor:
    """softmax(queries @ (image + pe)^T) @ image per prompt: queries (P, R, D) already scaled, image
    (P, N, D), pe (N, D), half precision. Returns (P, R, D) in image's dtype.

    chunks: how many chunks of image tokens each prompt's attention is split in (default: enough
    programs for about four per multiprocessor). config: one of ``FLASH_CONFIGS`` instead of the
    autotuned choice (tests check every configuration)."""
    p, rows, d = queries.shape
    n = image.shape[1]
    if d & (d - 1) or d < 16 or n % 128:
        raise ValueError(f"token-to-image kernel needs a power-of-two width >= 16 and N divisible by 128, "
                         f"got D={d}, N={n}")
    if chunks is None:
        sms = torch.cuda.get_device_properties(image.device).multi_processor_count if image.is_cuda else 1
        chunks = 1
        while p * chunks < 4 * sms and n // (chunks * 2) >= 512:
            chunks *= 2
    if n % chunks or (n // chunks) % 128:
        raise ValueError(f"{chunks} chunks do not split {n} image tokens in multiples of 128")
    r = max(16, 1 << (rows - 1).bit_length())
    acc = torch.empty((p, chunks, r, d), dtype=torch.float32, device=image.device)
    top = torch.empty((p, chunks, r), dtype=torch.float32, device=image.device)
    total = torch.empty_like(top)
    launcher(_token_to_image_kernel, lambda meta: (p, chunks), config)(
        queries.contiguous(), image.contiguous(), pe.contiguous(), acc, top, total, rows, N=n, D=d, R=r,
        CHUNK=n // chunks)
    out = torch.empty((p, rows, d), dtype=image.dtype, device=image.device)
    merge_rows = 16
    _merge_chunks_kernel[(p, r // merge_rows)](acc, top, total, out, rows, CHUNKS=chunks, R=r, D=d, BR=merge_rows)
    return out
