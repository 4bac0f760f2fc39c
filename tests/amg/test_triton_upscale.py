"""The upscaling kernel's GELU against torch's exact GELU: the erf form (float32), compiled on CUDA
or interpreted on the CPU (Triton's interpreter is chosen in tests/conftest.py before the kernels
are defined); the packed float16 tanh form (half precision) on CUDA only (inline PTX)."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from curate.amg.triton_upscale import _gelu_erf, _gelu_half2  # noqa: E402
from tests.conftest import apply_marks, gpu_only  # noqa: E402


@triton.jit
def _gelu_kernel(x_ptr, out_ptr, N: tl.constexpr, HALF: tl.constexpr):
    i = tl.arange(0, N)
    x = tl.load(x_ptr + i)
    if HALF:
        y = _gelu_half2(x.to(tl.float16)).to(tl.float32)
    else:
        y = _gelu_erf(x)
    tl.store(out_ptr + i, y)


def _gelu_error(half: bool) -> tuple[torch.Tensor, torch.Tensor]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.cat([torch.linspace(-12, 12, 8189), torch.tensor([0.0, -1e-30, 1e-30])]).to(device)
    out = torch.empty_like(x)
    _gelu_kernel[(1,)](x, out, N=len(x), HALF=half)
    return x, (out.double() - torch.nn.functional.gelu(x.double())).abs()


def test_erf_form_is_float32_accurate(triton_runs):
    x, error = _gelu_error(half=False)
    assert (error <= 1e-6 * x.abs().clamp_min(1)).all()


@apply_marks(gpu_only("tanh.approx is PTX: needs a CUDA GPU"))
def test_packed_half_form_is_within_float16_rounding(triton_runs):
    x, error = _gelu_error(half=True)
    # the tanh form differs from the erf form by up to 4.7e-4 (at |x| = 2.7); float16 rounding of
    # the input, the packed arithmetic and the output (emulated in numpy: up to 6.2e-4 |x|) and
    # tanh.approx.f16x2 (2**-10.7 of 0.5 |x|) stay within 1e-3 |x|, two float16 ulps
    assert (error <= 1e-3 + 1e-3 * x.abs()).all()
    assert error.max().item() > 1e-5  # the approximation is in use (the erf form would be exact)
