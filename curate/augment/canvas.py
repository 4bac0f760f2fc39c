"""Canvas pasting (PS3 Fig. 8, high-res alignment data), as pure functions.

A low-res VQA image is pasted onto a large canvas; the question and answer are inherited and the
pasted box is recorded, so the MLLM must find the small image inside a high-res one. Every random
choice comes from ``numpy.random.default_rng([seed, item_index])``: the same input gives the same canvas.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CanvasPlan:
    width: int
    height: int
    box: tuple[int, int, int, int]  # where the source lands, xyxy, x1/y1 exclusive
    scale: float  # pasted size / source size
    background: str  # solid | noise | image
    colour: tuple[int, int, int]  # solid background colour
    noise_seed: int
    background_index: int  # which background photo (image backgrounds)

    def as_dict(self) -> dict:
        return asdict(self)


def plan_canvas(src_w: int, src_h: int, cfg, seed: int, item_index: int, n_background_images: int = 0) -> CanvasPlan:
    """Draw canvas size, paste scale and position, and background for one source image."""
    rng = np.random.default_rng([seed, item_index])
    long_side = int(rng.integers(cfg.long_side[0], cfg.long_side[1] + 1))
    aspect = math.exp(rng.uniform(math.log(cfg.aspect_ratio[0]), math.log(cfg.aspect_ratio[1])))
    width, height = (long_side, max(1, round(long_side / aspect))) if aspect >= 1 else \
        (max(1, round(long_side * aspect)), long_side)
    scale = float(rng.uniform(cfg.scale[0], cfg.scale[1]))
    # A source larger than its canvas is shrunk to fit: the box must lie inside the canvas.
    scale = min(scale, width / src_w, height / src_h)
    paste_w, paste_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    if (paste_w, paste_h) == (src_w, src_h):
        scale = 1.0
    x = int(rng.integers(0, width - paste_w + 1))
    y = int(rng.integers(0, height - paste_h + 1))
    kinds = [k for k, w in cfg.backgrounds.items() if w > 0 and (k != "image" or n_background_images)]
    weights = np.array([cfg.backgrounds[k] for k in kinds], dtype=float)
    background = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return CanvasPlan(width=width, height=height, box=(x, y, x + paste_w, y + paste_h), scale=scale,
                      background=background, colour=colour, noise_seed=int(rng.integers(0, 2**31)),
                      background_index=int(rng.integers(0, max(1, n_background_images))))


def render_background(plan: CanvasPlan, background_image: Image.Image | None = None) -> Image.Image:
    size = (plan.width, plan.height)
    if plan.background == "solid":
        return Image.new("RGB", size, plan.colour)
    if plan.background == "noise":
        # Low-frequency colour noise (upsampled from a coarse grid) looks like texture, not static.
        rng = np.random.default_rng(plan.noise_seed)
        coarse = rng.integers(0, 256, size=(max(2, plan.height // 64), max(2, plan.width // 64), 3), dtype=np.uint8)
        return Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    if background_image is None:
        raise ValueError("an image background needs a background photo")
    return cover(background_image.convert("RGB"), size)


def cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``image`` to cover ``size`` and centre-crop it."""
    scale = max(size[0] / image.width, size[1] / image.height)
    resized = image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)),
                           Image.Resampling.BICUBIC)
    left, top = (resized.width - size[0]) // 2, (resized.height - size[1]) // 2
    return resized.crop((left, top, left + size[0], top + size[1]))


def paste(source: Image.Image, plan: CanvasPlan, background_image: Image.Image | None = None) -> Image.Image:
    """The canvas with ``source`` (RGB) pasted at ``plan.box``."""
    canvas = render_background(plan, background_image)
    x0, y0, x1, y1 = plan.box
    pasted = source if source.size == (x1 - x0, y1 - y0) else source.resize((x1 - x0, y1 - y0),
                                                                           Image.Resampling.LANCZOS)
    canvas.paste(pasted, (x0, y0))
    return canvas
