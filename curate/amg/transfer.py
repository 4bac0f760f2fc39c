"""Host-to-device copies that do not make the host wait."""

from __future__ import annotations

import warnings

import numpy as np
import torch


def upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy array on ``device``. To a GPU it goes through pinned memory, asynchronously: a copy
    from ordinary (pageable) memory makes the host wait until the device's queue has drained, which
    leaves the GPU idle while the host queues the next work."""
    with warnings.catch_warnings():  # read-only arrays (decoded images) are only read from here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
