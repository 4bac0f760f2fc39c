"""How the Triton kernels run here (imported only where Triton is installed): compiled on CUDA, or
under Triton's interpreter (TRITON_INTERPRET=1, numpy on the CPU: tests), which must be chosen
before the kernels are defined and computes float32 products exactly."""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# float32 operands: float32-accurate products on tensor cores (3 TF32 products); bf16/fp16 ignore it
PRECISION = tl.constexpr("ieee" if INTERPRETED else "tf32x3")


def launcher(kernel, grid, config: triton.Config | None):
    """An autotuned kernel's launcher: autotuned (config None), or with one given configuration
    (tests run every configuration the autotuner may pick). grid: meta-parameters -> grid."""
    if config is None:
        return kernel[grid]
    meta = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
    if config.maxnreg is not None:
        meta["maxnreg"] = config.maxnreg

    def launch(*args, **kwargs):
        return kernel.fn[grid(config.kwargs)](*args, **kwargs, **meta)

    return launch
