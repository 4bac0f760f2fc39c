"""Fused Triton kernel for the decoder's image-to-token attention block (imported only where Triton is installed).

In each two-way block, every image token (4096 per prompt) attends to the prompt's 7 tokens, the
result is added to the image token and layer-normalised. With the query projection folded into the
keys and the output projection into the values (see decoder.py), that is per image token:

    logits = q @ folded (8 heads x 7 tokens) + bias -> softmax per head -> @ values -> + residual -> LayerNorm

One program takes BN image tokens of one prompt through all of it and writes the new image tokens
(and, when asked, the same plus the positional encoding, which the next token-to-image attention
reads), instead of five separate passes over the (P, 4096, 256) tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from curate.amg.triton_env import INTERPRETED, PRECISION


def _configs() -> list[triton.Config]:
    if INTERPRETED:
        return [triton.Config({"BN": 32}, num_warps=4)]
    return [triton.Config({"BN": bn}, num_warps=w) for bn, w in ((32, 4), (32, 8), (64, 4), (64, 8), (128, 8))]


@triton.autotune(configs=_configs(), key=["N", "DQ", "D", "HEADS", "SLOTS", "HAS_PE", "WRITE_PE"])
@triton.jit
def _image_to_token_kernel(q_ptr, q_stride, pe_ptr, res_ptr, res_stride, fold_ptr, bias_ptr, val_ptr, bo_ptr,
                           ln_w_ptr, ln_b_ptr, out_ptr, out_pe_ptr, eps, N: tl.constexpr, DQ: tl.constexpr,
                           D: tl.constexpr, HEADS: tl.constexpr, SLOTS: tl.constexpr, HAS_PE: tl.constexpr,
                           WRITE_PE: tl.constexpr, BN: tl.constexpr):
    p = tl.program_id(1).to(tl.int64)
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    dq = tl.arange(0, DQ)
    d = tl.arange(0, D)
    hs = tl.arange(0, HEADS * SLOTS)
    q = tl.load(q_ptr + p * q_stride + n[:, None] * DQ + dq[None, :])
    if HAS_PE:
        q = (q.to(tl.float32) + tl.load(pe_ptr + n[:, None] * DQ + dq[None, :]).to(tl.float32)).to(q.dtype)
    fold = tl.load(fold_ptr + p * DQ * HEADS * SLOTS + dq[:, None] * (HEADS * SLOTS) + hs[None, :])
    logits = tl.dot(q, fold, input_precision=PRECISION) + tl.load(bias_ptr + p * HEADS * SLOTS + hs)[None, :]
    # softmax over each head's token slots (padding slots have bias -inf), head by head over
    # column masks: 2-D reductions only
    head = hs // SLOTS
    top = tl.zeros([BN, HEADS * SLOTS], tl.float32)
    for h in tl.static_range(HEADS):
        mine = (head == h)[None, :]
        top = tl.where(mine, tl.max(tl.where(mine, logits, -float("inf")), axis=1)[:, None], top)
    weights = tl.exp(logits - top)
    total = tl.zeros([BN, HEADS * SLOTS], tl.float32)
    for h in tl.static_range(HEADS):
        mine = (head == h)[None, :]
        total = tl.where(mine, tl.sum(tl.where(mine, weights, 0.0), axis=1)[:, None], total)
    probs = weights / total
    val = tl.load(val_ptr + p * HEADS * SLOTS * D + hs[:, None] * D + d[None, :])
    x = tl.dot(probs.to(val.dtype), val, input_precision=PRECISION) + tl.load(bo_ptr + d).to(tl.float32)[None, :]
    x += tl.load(res_ptr + p * res_stride + n[:, None] * D + d[None, :]).to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    centred = x - mean[:, None]
    var = tl.sum(centred * centred, axis=1) / D
    y = centred / tl.sqrt(var + eps)[:, None] * tl.load(ln_w_ptr + d).to(tl.float32)[None, :] \
        + tl.load(ln_b_ptr + d).to(tl.float32)[None, :]
    at = p * N * D + n[:, None] * D + d[None, :]
    tl.store(out_ptr + at, y.to(out_ptr.dtype.element_ty))
    if WRITE_PE:
        pe = tl.load(pe_ptr + n[:, None] * D + d[None, :]).to(tl.float32)
        tl.store(out_pe_ptr + at, (y.to(out_ptr.dtype.element_ty).to(tl.float32) + pe).to(out_ptr.dtype.element_ty))


def image_to_token_block(queries: torch.Tensor, residual: torch.Tensor, folded: torch.Tensor, bias: torch.Tensor,
                         values: torch.Tensor, out_bias: torch.Tensor, norm: torch.nn.LayerNorm, slots: int,
                         pe: torch.Tensor | None = None, add_pe: bool = False, write_pe: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """norm(residual + softmax_per_head((queries [+ pe]) @ folded + bias) @ values + out_bias).

    queries (P or 1, N, DQ) and residual (P or 1, N, D): a leading 1 is shared by every prompt;
    folded (P, DQ, H*S), bias (P, H*S) float32 with -inf in unused token slots, values (P, H*S, D),
    S = ``slots`` a power of two; pe (N, D): added to the queries (``add_pe``, needs DQ = D) and/or
    to a second output (``write_pe``). Returns (P, N, D) in values' dtype, and that plus pe or None.
    """
    p, dq, hs = folded.shape
    n, d = residual.shape[1], residual.shape[2]
    if n % 128 or hs % slots or slots & (slots - 1) or (hs // slots) & (hs // slots - 1):
        raise ValueError(f"image-to-token kernel needs N divisible by 128 and power-of-two heads and slots, "
                         f"got N={n}, H*S={hs}, S={slots}")
    if (add_pe or write_pe) and (pe is None or (add_pe and dq != d)):
        raise ValueError("pe (N, D) is needed to add it, and queries must then have D channels")
    out = torch.empty((p, n, d), dtype=values.dtype, device=values.device)
    out_pe = torch.empty_like(out) if write_pe else None
    queries, residual = queries.contiguous(), residual.contiguous()
    _image_to_token_kernel[lambda meta: (n // meta["BN"], p)](
        queries, n * dq if queries.shape[0] > 1 else 0, pe.contiguous() if pe is not None else out,
        residual, n * d if residual.shape[0] > 1 else 0, folded.contiguous(), bias.float().contiguous(),
        values.contiguous(), out_bias, norm.weight, norm.bias, out, out_pe if write_pe else out, float(norm.eps),
        N=n, DQ=dq, D=d, HEADS=hs // slots, SLOTS=slots, HAS_PE=add_pe, WRITE_PE=write_pe,
    )
    return out, out_pe
