"""Fixtures shared by the mask-generation tests."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture
def triton_runs() -> None:
    """Skip unless Triton kernels can run here: compiled on a GPU, or under the interpreter that
    tests/conftest.py chooses (before any kernel is defined) where there is none."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and Triton's interpreter was not chosen before import")
