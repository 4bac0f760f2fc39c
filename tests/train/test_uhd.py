"""LLaVA-UHD scheme: slices at native resolution with their aspect, compression, spatial schema."""

from __future__ import annotations

import pytest
import torch

from curate.train.geometry import area_grid
from curate.train.slicing import uhd_partition
from curate.train.uhd import UHDScheme
from tests.train.test_attention import tiny_vit


def scheme(compress: str) -> UHDScheme:
    return UHDScheme(tiny_vit(), patch=8, native=32, max_slices=6, compress=compress, queries=3)


@pytest.mark.parametrize("width,height", [(48, 288), (288, 48)])
@pytest.mark.parametrize("compress", ["resampler", "space_to_depth"])
def test_one_to_six_images_get_six_slices_and_a_schema(width, height, compress):
    uhd = scheme(compress)
    views = uhd.views(torch.randn(3, height, width))
    cols, rows = views.layout
    assert (cols, rows) == uhd_partition(width, height, 32, 32, 6) == ((6, 1) if width > height else (1, 6))
    assert len(views.slices) == 6
    for px, grid, hidden in zip(views.slice_px, views.slice_grids, views.slices):
        x0, y0, x1, y1 = px
        assert grid == area_grid(x1 - x0, y1 - y0, 4) and hidden.shape == (grid[0] * grid[1], 32)
    sequence = uhd.sequence(views)
    if compress == "resampler":
        per_view = [3] * 7
    else:  # space-to-depth halves each side (odd sides padded)
        per_view = [-(-r // 2) * -(-c // 2) for r, c in [views.overview_grid, *views.slice_grids]]
    separators = 1 + (cols - 1) * rows + rows  # "\n" after the overview, "," inside rows, "\n" after rows
    assert sequence.shape == (sum(per_view) + separators, 32)


def test_the_schema_tokens_sit_between_slices_and_after_rows():
    uhd = scheme("space_to_depth")
    with torch.no_grad():
        uhd.comma.fill_(7.0)
        uhd.newline.fill_(-7.0)
    views = uhd.views(torch.randn(3, 64, 96))  # a 3 x 2 grid of slices
    cols, rows = views.layout
    assert cols * rows > 1
    marks = [("," if (t == 7).all() else "\n") for t in uhd.sequence(views) if (t.abs() == 7).all()]
    assert marks == ["\n"] + ([","] * (cols - 1) + ["\n"]) * rows


def test_a_small_image_is_one_overview_and_no_schema():
    uhd = scheme("resampler")
    views = uhd.views(torch.randn(3, 30, 30))
    assert views.slices == [] and uhd.sequence(views).shape == (3, 32)


def test_compression_is_differentiable_into_the_vit():
    uhd = scheme("space_to_depth")
    uhd.sequence(uhd.views(torch.randn(3, 48, 288))).sum().backward()
    assert uhd.vm.embeddings.patch_embedding.weight.grad.abs().sum() > 0 and uhd.comma.grad is not None
