"""The one image decoder: stored image bytes -> RGB array. Every stage decodes through here."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode_rgb(data: bytes) -> Image.Image:
    """Decode stored bytes (already validated, oriented, 8-bit RGB or L) to an RGB PIL image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_rgb_array(data: bytes) -> np.ndarray:
    return np.asarray(decode_rgb(data))


def fit_within(img: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """Downscale so the longer side is at most ``max_side``; returns (image, scale applied)."""
    scale = min(1.0, max_side / max(img.size))
    if scale >= 1.0:
        return img, 1.0
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR), scale
