import numpy as np
from PIL import Image, ImageDraw

from curate.backends.masks_skimage import FelzenszwalbMasks
from curate.config import SkimageMasksConfig


def test_segments_are_full_resolution_boxes_inside_the_image():
    img = Image.new("RGB", (2000, 1200), (200, 220, 240))
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.ellipse([100 + i * 150, 500, 160 + i * 150, 560], fill=(200, 30, 30))
    gen = FelzenszwalbMasks(SkimageMasksConfig(backend="skimage_felzenszwalb", work_side=500))
    [masks] = gen.generate([img])
    assert len(masks) >= 12
    assert (masks.boxes[:, 0] >= 0).all() and (masks.boxes[:, 2] <= 2000 + 1e-6).all()
    assert (masks.boxes[:, 3] <= 1200 + 1e-6).all()
    # the dots are found where they were drawn, at full resolution (~60 px wide)
    dots = masks.boxes[(masks.boxes[:, 1] > 450) & (masks.boxes[:, 3] < 610)]
    widths = dots[:, 2] - dots[:, 0]
    assert np.sum((widths > 40) & (widths < 90)) >= 10
    assert (masks.areas / (2000 * 1200) <= 0.25).all()
