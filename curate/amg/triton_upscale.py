"""Fused Triton kernel for the mask decoder's output upscaling (imported only where Triton is installed).

SAM's output upscaling is two stride-2 2x2 transposed convolutions (LayerNorm and GELU between,
GELU after) followed by a per-prompt product with the three hypernetwork vectors. A stride-2 2x2
transposed convolution maps each input pixel to its own 2x2 output block, so the whole chain is per
embedding pixel: 256 channels -> 4 sub-pixels x 64 -> 16 sub-pixels x 32 -> 16 x 3 mask logits.
One program takes BN embedding pixels of one prompt through all of it in registers and shared
memory and writes only the three low-res masks; the unfused chain writes and reads back about
10 MB of intermediates per prompt.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from curate.amg.triton_env import INTERPRETED, PRECISION, launcher


@triton.jit
def _gelu_erf(x):
    """nn.GELU() in float32 (float32 runs: parity)."""
    return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))


@triton.jit
def _gelu_half2(x):
    """nn.GELU()'s tanh form on float16 values, two at a time: packed half-precision arithmetic and
    the hardware tanh (tanh.approx.f16x2, about 2**-10.7 relative), for half-precision runs.
    0.5x(1 + tanh(x (c0 + c1 x^2))) with c0 = sqrt(2/pi) and c1 = 0.044715 c0 rounded to float16
    (0x3a62, 0x2891); the tanh form is within 4.7e-4 of the erf form. With libdevice's erf the
    whole kernel was 3.4-3.6x slower on an H100; with the float32 tanh form (tanh.approx.f32)
    2.21 ms against 1.96 ms packed, 576 XL1 prompts."""
    return tl.inline_asm_elementwise(
        """{
        .reg .b32 c0, c1, half, u, t, h;
        mov.b32 c0, 0x3a623a62;
        mov.b32 c1, 0x28912891;
        mov.b32 half, 0x38003800;
        mul.rn.f16x2 u, $1, $1;
        fma.rn.f16x2 u, u, c1, c0;
        mul.rn.f16x2 u, u, $1;
        tanh.approx.f16x2 t, u;
        mul.rn.f16x2 h, $1, half;
        fma.rn.f16x2 $0, h, t, h;
        }""", "=r,r", [x], dtype=tl.float16, is_pure=True, pack=2)


def _configs() -> list[triton.Config]:
    if INTERPRETED:
        return [triton.Config({"BN": 64}, num_warps=4)]
    # the fastest of a sweep on an H100 (BN 32 and BN 128 with 4 warps were 2.5-3x slower; capping
    # registers to fit more programs per multiprocessor spilled and was slower)
    return [triton.Config({"BN": bn}, num_warps=w, num_stages=1) for bn, w in ((64, 4), (128, 8), (64, 8))]


CONFIGS = _configs()


@triton.autotune(configs=CONFIGS, key=["N", "D", "C1", "C2", "M", "HALF"])
@triton.jit
def _upscale_kernel(keys_ptr, w1_ptr, b1_ptr, ln_w_ptr, ln_b_ptr, w2_ptr, b2_ptr, hyper_ptr, out_ptr, eps,
                    GRID_W: tl.constexpr, N: tl.constexpr, D: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr,
                    M: tl.constexpr, BN: tl.constexpr, HALF: tl.constexpr):
    """BN embedding pixels of prompt program_id(1). HALF: w2 and hyper are float16 (the GELUs'
    outputs are), else float32."""
    p = tl.program_id(1)
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    d = tl.arange(0, D)
    c1 = tl.arange(0, C1)
    x = tl.load(keys_ptr + (p.to(tl.int64) * N + n[:, None]) * D + d[None, :])  # (BN, D)
    # block-diagonal hypernetwork matrix (4 x C2, 4 x 4): column 4e+m holds mask m for sub-pixel e
    r = tl.arange(0, 4 * C2)
    q = tl.arange(0, 16)
    m = q % 4
    e = q // 4
    hyper = tl.load(hyper_ptr + (p * M + m[None, :]) * C2 + (r % C2)[:, None],
                    mask=((r // C2)[:, None] == e[None, :]) & (m[None, :] < M), other=0.0)
    w2 = tl.load(w2_ptr + c1[:, None] * (4 * C2) + r[None, :])  # (C1, [ei, ej, C2])
    b2 = tl.load(b2_ptr + r % C2).to(tl.float32)
    ln_w = tl.load(ln_w_ptr + c1).to(tl.float32)
    ln_b = tl.load(ln_b_ptr + c1).to(tl.float32)
    b1 = tl.load(b1_ptr + c1).to(tl.float32)
    out_base = out_ptr + p.to(tl.int64) * M * (16 * N)
    # first sub-pixel (di, dj). Half precision: a loop, not unrolled (fewer registers; an H100:
    # 1.96 vs 2.10 ms for 576 XL1 prompts); float32 unrolled (looped, it needs more shared memory
    # than a multiprocessor has)
    if HALF:
        for s in tl.range(0, 4):
            _subpixel(s, x, n, w1_ptr, b1, ln_w, ln_b, w2, b2, hyper, eps, out_base, GRID_W, N, D, C1, M, HALF)
    else:
        for s in tl.static_range(4):
            _subpixel(s, x, n, w1_ptr, b1, ln_w, ln_b, w2, b2, hyper, eps, out_base, GRID_W, N, D, C1, M, HALF)


@triton.jit
def _subpixel(s, x, n, w1_ptr, b1, ln_w, ln_b, w2, b2, hyper, eps, out_base, GRID_W: tl.constexpr, N: tl.constexpr,
              D: tl.constexpr, C1: tl.constexpr, M: tl.constexpr, HALF: tl.constexpr):
    """The 16 x M mask logits of first sub-pixel s of the embedding pixels n, stored."""
    d = tl.arange(0, D)
    c1 = tl.arange(0, C1)
    w1 = tl.load(w1_ptr + d[:, None] * (4 * C1) + s * C1 + c1[None, :])  # (D, C1)
    y = tl.dot(x, w1, input_precision=PRECISION) + b1[None, :]
    mean = tl.sum(y, axis=1) / C1
    centred = y - mean[:, None]
    var = tl.sum(centred * centred, axis=1) / C1
    y = centred / tl.sqrt(var + eps)[:, None] * ln_w[None, :] + ln_b[None, :]
    # (BN, 4 * C2): the second sub-pixels (ei, ej), then (BN, 16): column 4e + m
    if HALF:
        y16 = _gelu_half2(y.to(tl.float16))
        z16 = _gelu_half2((tl.dot(y16, w2) + b2[None, :]).to(tl.float16))
        masks = tl.dot(z16, hyper)
    else:
        y = _gelu_erf(y)
        z = _gelu_erf(tl.dot(y.to(w2.dtype), w2, input_precision=PRECISION) + b2[None, :])
        masks = tl.dot(z.to(hyper.dtype), hyper, input_precision=PRECISION)
    q = tl.arange(0, 16)
    m = q % 4
    e = q // 4
    row = 4 * (n // GRID_W)[:, None] + 2 * (s // 2) + (e // 2)[None, :]
    col = 4 * (n % GRID_W)[:, None] + 2 * (s % 2) + (e % 2)[None, :]
    tl.store(out_base + m[None, :] * (16 * N) + row * (4 * GRID_W) + col, masks.to(out_base.dtype.element_ty),
             mask=(m < M)[None, :])


def upscaled_masks_triton(output_upscaling, keys: torch.Tensor, hyper: torch.Tensor,
                          grid: tuple[int, int], config: triton.Config | None = None) -> torch.Tensor:
    """keys (P, N, D) image tokens after the transformer, hyper (P, M, D/8) -> masks (P, M, 4h, 4w),
    in keys' dtype; the same arithmetic as ``decoder._upscaled_masks``. Half-precision keys: GELU
    in its packed float16 tanh form (``_gelu_half2``), whose float16 outputs meet float16 copies of
    the second convolution's weights and of hyper (10-bit mantissas, where bf16 has 7). config: one
    of ``CONFIGS`` instead of the autotuned choice, launched directly rather than through the custom
    operator (tests check every configuration)."""
    conv1, norm, _, conv2, _ = output_upscaling
    d = keys.shape[-1]
    c1, c2 = conv1.weight.shape[1], conv2.weight.shape[1]
    operands = torch.float16 if _half(keys) else keys.dtype  # of the products after each GELU
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(d, 4 * c1).to(keys.dtype)  # (D, [di, dj, C1])
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2).to(operands)  # (C1, [ei, ej, C2])
    args = (keys, hyper.to(operands), w1, conv1.bias, norm.weight, norm.bias, w2, conv2.bias, float(norm.eps),
            grid[0], grid[1])
    return upscaled_masks_op(*args) if config is None else _upscale(*args, config=config)


# An opaque operator to torch.compile: traced through, the kernel's launch gave wrong masks in a
# compiled decoder (torch 2.11, Triton 3.6; tests/amg/test_gpu.py compares compiled and eager).
@torch.library.custom_op("curate::upscaled_masks", mutates_args=())
def upscaled_masks_op(keys: torch.Tensor, hyper: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                      ln_w: torch.Tensor, ln_b: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, eps: float,
                      grid_h: int, grid_w: int) -> torch.Tensor:
    """The kernel's launch: weights already in the (D, 4*C1) and (C1, 4*C2) sub-pixel layouts."""
    return _upscale(keys, hyper, w1, b1, ln_w, ln_b, w2, b2, eps, grid_h, grid_w)


def _upscale(keys: torch.Tensor, hyper: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, ln_w: torch.Tensor,
             ln_b: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, eps: float, grid_h: int, grid_w: int,
             config: triton.Config | None = None) -> torch.Tensor:
    p, n, d = keys.shape
    m, c2 = hyper.shape[1], hyper.shape[2]
    c1 = w2.shape[0]
    if n % 128 or m > 4:
        raise ValueError(f"upscaling kernel needs N divisible by 128 and at most 4 masks, got N={n}, M={m}")
    out = torch.empty((p, m, 4 * grid_h, 4 * grid_w), dtype=keys.dtype, device=keys.device)
    # block of embedding pixels per program and warps: autotuned once per shape (first call)
    launcher(_upscale_kernel, lambda meta: (n // meta["BN"], p), config)(
        keys.contiguous(), w1.contiguous(), b1, ln_w, ln_b, w2.contiguous(), b2, hyper.contiguous(), out, eps,
        GRID_W=grid_w, N=n, D=d, C1=c1, C2=c2, M=m, HALF=_half(keys),
    )
    return out


def _half(keys: torch.Tensor) -> bool:
    """Half-precision keys take the packed GELU (PTX: compiled kernels only)."""
    return keys.dtype in (torch.bfloat16, torch.float16) and not INTERPRETED


@upscaled_masks_op.register_fake
def _(keys, hyper, w1, b1, ln_w, ln_b, w2, b2, eps, grid_h, grid_w):
    return keys.new_empty((keys.shape[0], hyper.shape[1], 4 * grid_h, 4 * grid_w))
