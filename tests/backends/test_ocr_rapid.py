"""Real OCR with the PP-OCR models shipped in the rapidocr wheel, on text rendered here."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from curate.backends.ocr_rapid import OcrLine, RapidOcrCaptioner, reading_order
from curate.config import RapidOcrConfig


@pytest.fixture(scope="module")
def ocr():
    return RapidOcrCaptioner(RapidOcrConfig(backend="rapidocr"))


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.parametrize("size", [18, 32, 56])
def test_reads_rendered_text_at_several_sizes(ocr, size):
    img = Image.new("RGB", (1400, 400), "white")
    draw = ImageDraw.Draw(img)
    lines = ["Platform 7 departure at 10:45", "Museum entrance ticket 2049"]
    for i, line in enumerate(lines):
        draw.text((40, 60 + i * size * 2), line, font=ImageFont.load_default(size=size), fill="black")
    [result] = ocr.caption(img, [(0, 0, img.width, img.height)])
    for line in lines:
        assert normalise(line) in normalise(result.text), (size, result.text)


def test_small_text_on_a_large_page_is_read_from_its_box(ocr):
    page = Image.new("RGB", (3000, 4000), (252, 252, 250))
    draw = ImageDraw.Draw(page)
    draw.text((2100, 3500), "Invoice 88314 paid", font=ImageFont.load_default(size=16), fill="black")
    draw.text((200, 200), "HEADER TEXT", font=ImageFont.load_default(size=80), fill="black")
    [small, empty] = ocr.caption(page, [(2050, 3450, 2450, 3560), (1000, 1500, 1600, 2100)])
    assert "invoice 88314 paid" in normalise(small.text)
    assert empty.text is None and empty.reason == "no_text"


def test_other_scripts_and_fonts_line_order(ocr):
    img = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(img)
    draw.text((30, 40), "first line here", font=ImageFont.load_default(size=40), fill=(20, 20, 90))
    draw.text((30, 160), "second line below", font=ImageFont.load_default(size=28), fill=(90, 10, 10))
    [result] = ocr.caption(img, [(0, 0, 900, 300)])
    text = normalise(result.text)
    assert text.index("first line") < text.index("second line")


def test_reading_order_groups_rows_then_left_to_right():
    def line(x, y, text):
        return OcrLine(np.array([[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]], float), text, 0.9)

    lines = [line(200, 100, "world"), line(0, 102, "hello"), line(0, 10, "title"), line(0, 200, "end")]
    assert reading_order(lines) == "title\nhello world\nend"
    assert reading_order([]) == ""


@pytest.mark.slow
def test_an_engine_in_a_ray_actor_gets_the_threads_of_its_cpus():
    """ONNX Runtime's default is a thread per core in every engine: a pool of OCR actors beside GPU
    actors oversubscribed the CPUs. In Ray an engine takes the CPUs its actor was granted."""
    import ray

    from curate.backends.ocr_rapid import rapidocr_engine

    assert rapidocr_engine().cfg.EngineConfig.onnxruntime.intra_op_num_threads == -1  # no Ray: the default

    def threads() -> int:
        from curate.backends.ocr_rapid import rapidocr_engine

        return rapidocr_engine().cfg.EngineConfig.onnxruntime.intra_op_num_threads

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        half, two = ray.remote(num_cpus=0.5)(threads), ray.remote(num_cpus=2)(threads)
        assert ray.get([half.remote(), two.remote()]) == [1, 2]
    finally:
        ray.shutdown()
