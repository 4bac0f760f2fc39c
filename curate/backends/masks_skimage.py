"""CPU region proposals: scikit-image's Felzenszwalb graph-based segmentation.

Not SAM: an offline stand-in that needs no weights. It over-segments the image into regions of
similar colour; small regions cluster where there is detail (text, small objects), which is what
box selection looks for.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.segmentation import felzenszwalb

from curate.backends.types import MaskSet
from curate.config import SkimageMasksConfig
from curate.ops.images import fit_within


class FelzenszwalbMasks:
    name = "skimage_felzenszwalb"

    def __init__(self, cfg: SkimageMasksConfig):
        self.cfg = cfg

    def describe(self) -> str:
        return f"skimage.felzenszwalb(scale={self.cfg.scale}, sigma={self.cfg.sigma}, min_size={self.cfg.min_size})"

    def generate(self, images: list[Image.Image]) -> list[MaskSet]:
        return [self._one(img) for img in images]

    def _one(self, img: Image.Image) -> MaskSet:
        small, scale = fit_within(img, self.cfg.work_side)
        labels = felzenszwalb(
            np.asarray(small), scale=self.cfg.scale, sigma=self.cfg.sigma, min_size=self.cfg.min_size
        )
        n = int(labels.max()) + 1
        areas = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
        slices = ndimage.find_objects(labels + 1)
        boxes = np.array(
            [[s[1].start, s[0].start, s[1].stop, s[0].stop] if s is not None else [0, 0, 0, 0] for s in slices],
            dtype=np.float64,
        )
        keep = (areas > 0) & (areas / labels.size <= self.cfg.max_area_frac)
        inv = 1.0 / scale
        return MaskSet(
            boxes=boxes[keep] * inv,
            areas=areas[keep] * inv * inv,
            scores=np.ones(int(keep.sum())),
        )
