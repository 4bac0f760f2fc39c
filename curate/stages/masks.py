"""What a mask generator returns for one image: per-mask boxes, areas and scores (no pixel masks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MaskSet:
    """Masks of one image in full-resolution pixels: boxes (N, 4) xyxy, areas (N,) px, scores (N,)."""

    boxes: np.ndarray
    areas: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.areas.shape[0])

    @classmethod
    def empty(cls) -> "MaskSet":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))
