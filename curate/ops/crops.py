"""Crop preparation for MLLM captioning (pure functions, no model code).

A box grows by a context margin, is clipped to the image, and is resized so its pixel count lies
within the model's budget with both sides multiples of the model's patch grid (Qwen2-VL: 28 px),
keeping the aspect ratio as closely as that grid allows.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """Grow ``box`` by ``margin`` times its side on each edge, clipped to the image."""
    x0, y0, x1, y1 = box
    dx = round((x1 - x0) * margin)
    dy = round((y1 - y0) * margin)
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


def fit_pixel_budget(width: int, height: int, min_pixels: int, max_pixels: int, factor: int = 28) -> tuple[int, int]:
    """Size (w, h) with w*h in [min_pixels, max_pixels] (as far as the grid allows), sides multiples of
    ``factor`` and at least one ``factor``; the aspect ratio is kept up to rounding."""
    if width < 1 or height < 1:
        raise ValueError(f"empty crop {width}x{height}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
    w = max(factor, round(width / factor) * factor)
    h = max(factor, round(height / factor) * factor)
    if w * h > max_pixels:
        scale = math.sqrt(width * height / max_pixels)
        w = max(factor, math.floor(width / scale / factor) * factor)
        h = max(factor, math.floor(height / scale / factor) * factor)
    elif w * h < min_pixels:
        scale = math.sqrt(min_pixels / (width * height))
        w = math.ceil(width * scale / factor) * factor
        h = math.ceil(height * scale / factor) * factor
    return w, h


def prepare_crop(image: Image.Image, box: Box, margin: float, min_pixels: int, max_pixels: int,
                 factor: int = 28) -> Image.Image:
    """The region as the MLLM will see it."""
    crop_box = expand_box(box, margin, image.width, image.height)
    crop = image.crop(crop_box)
    size = fit_pixel_budget(crop.width, crop.height, min_pixels, max_pixels, factor)
    return crop if crop.size == size else crop.resize(size, Image.BICUBIC)


def thumbnail_with_box(image: Image.Image, box: Box, max_side: int, colour: str = "red") -> Image.Image:
    """A downscaled whole image with ``box`` outlined: global context for the caption model."""
    scale = min(1.0, max_side / max(image.width, image.height))
    thumb = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(thumb)
    line = max(2, round(max(thumb.size) / 200))
    draw.rectangle([round(v * scale) for v in box], outline=colour, width=line)
    return thumb
