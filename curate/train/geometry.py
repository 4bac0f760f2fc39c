"""Native-aspect geometry of the high-res views, as pure functions.

PS3 keeps the low-res view square (squashed) and gives each high-res scale the image's aspect ratio:
the long side gets ``scale`` pixels, the short side the same factor, both in whole patches. Every view
covers the whole image, so a box in normalised image coordinates maps onto any view's patch grid by
the same fractions (``box_score_map`` on that grid), whatever the aspect.
"""

from __future__ import annotations


def aspect_grid(width: int, height: int, long_side: int, patch: int) -> tuple[int, int]:
    """(rows, columns) of patches of a view whose long side is ``long_side`` px, keeping the aspect
    ratio to within one patch (at least one patch per side)."""
    if width < 1 or height < 1:
        raise ValueError(f"empty image {width}x{height}")
    long_cells = max(1, round(long_side / patch))
    short_cells = max(1, round(long_cells * min(width, height) / max(width, height)))
    return (long_cells, short_cells) if height >= width else (short_cells, long_cells)


def scale_grids(width: int, height: int, hi_res: int, scales: list[float], patch: int) -> list[tuple[int, int]]:
    """The patch grid of each high-res scale (fractions of ``hi_res``, the long side at scale 1)."""
    return [aspect_grid(width, height, round(hi_res * s), patch) for s in scales]


def view_size(width: int, height: int, long_side: int, patch: int) -> tuple[int, int]:
    """(width, height) in pixels of the native-aspect view: whole patches of ``aspect_grid``."""
    rows, cols = aspect_grid(width, height, long_side, patch)
    return cols * patch, rows * patch


def box_in_slice(box_norm, slice_px: tuple[int, int, int, int], width: int, height: int):
    """The part of a normalised image box inside a slice (x0, y0, x1, y1 in pixels of a width x height
    image), in the slice's own normalised coordinates; None when they do not overlap."""
    sx0, sy0, sx1, sy1 = slice_px
    x0, y0 = max(box_norm[0] * width, sx0), max(box_norm[1] * height, sy0)
    x1, y1 = min(box_norm[2] * width, sx1), min(box_norm[3] * height, sy1)
    if x1 <= x0 or y1 <= y0:
        return None
    w, h = sx1 - sx0, sy1 - sy0
    return ((x0 - sx0) / w, (y0 - sy0) / h, (x1 - sx0) / w, (y1 - sy0) / h)


def area_grid(width: int, height: int, cells: int) -> tuple[int, int]:
    """(rows, columns) with about ``cells`` x ``cells`` patches in all and the image's aspect ratio:
    LLaVA-UHD's resize of a slice (or the overview) to the ViT's native area."""
    if width < 1 or height < 1:
        raise ValueError(f"empty image {width}x{height}")
    ratio = width / height
    return max(1, round(cells / ratio**0.5)), max(1, round(cells * ratio**0.5))
