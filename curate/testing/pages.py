"""Rendered document pages with known text lines, for tests of text-line regions and OCR.

Layouts: ``sparse`` (a title, two body lines, a footnote), ``dense`` (a column of body text),
``columns`` (two columns side by side), ``small_print`` (body text over lines of shrinking size) and
``rotated`` (dense, scanned at a slant). Every line is a distinct sentence of common words.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageFont

WORDS = ("museum river station garden market bridge harbour library window morning evening yellow "
         "orange silver winter summer north south travel ticket coffee bakery school office theatre "
         "village mountain forest island letter number street corner service weekend holiday").split()
PAGE = (2480, 3508)  # A4 at 300 dpi


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + f" {rng.randint(10, 99)}"


def render_page(layout: str, seed: int = 0) -> tuple[Image.Image, list[str]]:
    """A page and its lines' texts, top to bottom (left column first)."""
    rng = random.Random(seed)
    page = Image.new("RGB", PAGE, (250, 250, 247))
    draw = ImageDraw.Draw(page)
    placed: list[tuple[str, int, int, int]] = []  # text, x, y, font px

    def column(x: int, y: int, count: int, size: int, words: int, step: float = 1.6) -> int:
        for i in range(count):
            placed.append((sentence(rng, words), x, int(y + i * size * step), size))
        return int(y + count * size * step)

    if layout == "sparse":
        column(300, 250, 1, 90, 3)
        column(300, 900, 2, 44, 5)
        column(300, 3250, 1, 24, 6)
    elif layout in ("dense", "rotated"):
        column(200, 200, 40, 40, 6)
    elif layout == "columns":
        column(150, 300, 20, 36, 4)
        column(1300, 300, 20, 36, 4)
    elif layout == "small_print":
        y = 200
        for size in (48, 36, 28, 22, 18, 15, 12, 10, 8):
            y = column(200, y, 2, size, 6, step=2.2) + 40
    else:
        raise ValueError(f"unknown layout {layout!r}")
    for text, x, y, size in placed:
        draw.text((x, y), text, font=ImageFont.load_default(size=size), fill=(20, 20, 20))
    if layout == "rotated":
        page = page.rotate(2.5, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(250, 250, 247))
    return page, [text for text, *_ in placed]


def line_sizes(layout: str, seed: int = 0) -> dict[str, int]:
    """For ``small_print``: each line's font size in px (what the smallest read x-height is measured by)."""
    rng = random.Random(seed)
    sizes = {}
    for size in (48, 36, 28, 22, 18, 15, 12, 10, 8):
        for _ in range(2):
            sizes[sentence(rng, 6)] = size
    return sizes if layout == "small_print" else {}
