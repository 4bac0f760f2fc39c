"""The one image decoder: stored image bytes -> RGB array. Every stage decodes through here."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image


def decode_rgb(data: bytes) -> Image.Image:
    """Decode stored bytes (already validated, oriented, 8-bit RGB or L) to an RGB PIL image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")


# Threads that decode (and crop) a batch's images: PIL releases the GIL while it decodes and resizes,
# and a 2K-4K JPEG takes about 0.1 s, so a 64-image caption call decoded one by one left the GPU
# idle for seconds. A stage actor reserves half a CPU in Ray's accounting; these threads are short.
IMAGE_THREADS = max(1, min(8, os.cpu_count() or 1))


def map_images(fn, items: list) -> list:
    """``[fn(item) for item in items]``, on up to IMAGE_THREADS threads, in order."""
    if len(items) < 2 or IMAGE_THREADS == 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(IMAGE_THREADS, len(items)), thread_name_prefix="images") as pool:
        return list(pool.map(fn, items))


def decode_many(blobs: list[bytes]) -> list[Image.Image]:
    """decode_rgb of each, decoded on several threads."""
    return map_images(decode_rgb, blobs)


def decode_rgb_array(data: bytes) -> np.ndarray:
    return np.asarray(decode_rgb(data))


def fit_within(img: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """Downscale so the longer side is at most ``max_side``; returns (image, scale applied)."""
    scale = min(1.0, max_side / max(img.size))
    if scale >= 1.0:
        return img, 1.0
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR), scale
