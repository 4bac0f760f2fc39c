"""How the Triton kernels run here (imported only where Triton is installed): compiled on CUDA, or
under Triton's interpreter (TRITON_INTERPRET=1, numpy on the CPU: tests), which must be chosen
before the kernels are defined and computes float32 products exactly."""

from __future__ import annotations

import os

import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# float32 operands: float32-accurate products on tensor cores (3 TF32 products); bf16/fp16 ignore it
PRECISION = tl.constexpr("ieee" if INTERPRETED else "tf32x3")
