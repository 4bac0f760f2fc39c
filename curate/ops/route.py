"""Document vs natural routing.

Heuristic (used when a source does not say): rendered and scanned pages are dominated by light,
unsaturated paper, which photographs rarely are. On a small thumbnail we measure the share of
near-white low-saturation pixels and the mean saturation; a page has much of the first and little
of the second. Both thresholds live in the ingest config.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def paper_statistics(img: Image.Image) -> tuple[float, float]:
    """(share of near-white unsaturated pixels, mean saturation), both in [0, 1]."""
    thumb = img.copy()
    thumb.thumbnail((256, 256))
    hsv = np.asarray(thumb.convert("HSV"), dtype=np.float32) / 255.0
    sat, val = hsv[..., 1], hsv[..., 2]
    white = float(np.mean((val > 0.8) & (sat < 0.15)))
    return white, float(sat.mean())


def route_kind(img: Image.Image, kind_hint: str, white_fraction: float, max_colorfulness: float) -> str:
    if kind_hint in ("natural", "document"):
        return kind_hint
    white, colorfulness = paper_statistics(img)
    return "document" if white >= white_fraction and colorfulness <= max_colorfulness else "natural"
