import math

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from curate.ops.crops import expand_box, fit_pixel_budget, prepare_crop, thumbnail_with_box


def test_expand_box_grows_by_margin_and_clips_to_image():
    assert expand_box((100, 100, 200, 300), 0.1, 1000, 1000) == (90, 80, 210, 320)
    assert expand_box((0, 0, 50, 50), 0.5, 60, 60) == (0, 0, 60, 60)


@settings(max_examples=300, deadline=None)
@given(w=st.integers(1, 8000), h=st.integers(1, 8000))
def test_fit_pixel_budget_sides_are_grid_multiples_within_budget(w, h):
    lo, hi, f = 256 * 28 * 28, 1280 * 28 * 28, 28
    if max(w, h) / min(w, h) > 40:
        return  # an aspect beyond the grid's reach is the crop's problem, not the budget's
    out_w, out_h = fit_pixel_budget(w, h, lo, hi, f)
    assert out_w % f == 0 and out_h % f == 0 and out_w >= f and out_h >= f
    assert out_w * out_h <= hi
    # the grid may round the area down by at most one row/column of cells below the minimum
    assert out_w * out_h >= lo - f * (out_w + out_h) - f * f
    assert math.isclose(math.log(out_w / out_h), math.log(w / h), abs_tol=0.5)


def test_fit_pixel_budget_keeps_a_crop_already_inside_the_budget():
    assert fit_pixel_budget(560, 420, 100 * 784, 1280 * 784) == (560, 420)


def test_prepare_crop_returns_the_budgeted_region():
    image = Image.new("RGB", (2000, 1500), "white")
    image.paste((255, 0, 0), (400, 300, 800, 600))
    crop = prepare_crop(image, (400, 300, 800, 600), 0.0, 28 * 28 * 16, 28 * 28 * 64)
    assert crop.width % 28 == 0 and crop.height % 28 == 0
    assert crop.getpixel((crop.width // 2, crop.height // 2)) == (255, 0, 0)


def test_thumbnail_outlines_the_box():
    image = Image.new("RGB", (4000, 3000), "white")
    thumb = thumbnail_with_box(image, (1000, 1000, 2000, 2000), 400)
    assert max(thumb.size) == 400
    assert thumb.getpixel((100, 130)) == (255, 0, 0)  # on the left edge of the scaled box
    assert thumb.getpixel((130, 130)) == (255, 255, 255)  # inside stays untouched
