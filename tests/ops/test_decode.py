import io

import pytest
from PIL import Image

from curate.config import IngestConfig
from curate.ops.decode import ingest_row
from curate.ops.images import decode_rgb
from curate.rows import new_row
from tests.conftest import jpeg_bytes, noise_image


def ingest_file(path, **cfg):
    return ingest_row(new_row(str(path), "test"), IngestConfig(**{"min_side": 64, "max_pixels": 50_000_000, **cfg}))


def test_every_hostile_input_is_handled_or_quarantined_with_its_reason(hostile_dir):
    folder, expected = hostile_dir
    for name, outcome in expected.items():
        row = ingest_file(folder / name)
        got = "ok" if row["status"] == "ok" else row["reason"]
        assert got == outcome, f"{name}: {got} ({row['detail']})"
        if row["status"] == "quarantined":
            assert row["detail"], name
            assert row["image"] is None


def test_normalised_inputs_store_8bit_rgb_or_l_and_say_why(hostile_dir):
    folder, _ = hostile_dir
    for name in ["cmyk.jpg", "gray16.png", "palette_alpha.png", "la.png", "exif_rotated.jpg"]:
        row = ingest_file(folder / name)
        stored = Image.open(io.BytesIO(row["image"]))
        assert stored.mode in ("RGB", "L"), name
        assert row["reencoded"], name
        assert stored.size == (row["width"], row["height"])


def test_missing_path_is_unreadable(tmp_path):
    row = ingest_file(tmp_path / "missing.jpg")
    assert row["reason"] == "unreadable" and "missing.jpg" in row["detail"]


def test_exif_orientation_is_applied(tmp_path):
    from tests.conftest import exif_rotated_jpeg

    path = tmp_path / "r.jpg"
    path.write_bytes(exif_rotated_jpeg(640, 400, orientation=6))
    row = ingest_file(path)
    assert (row["width"], row["height"]) == (400, 640)  # orientation 6: rotated 90 degrees
    assert "EXIF orientation 6" in row["reencoded"]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    import numpy as np

    arr = np.full((300, 300), 65535, dtype=np.uint16)
    arr[:, :150] = 32768
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    stored = decode_rgb(ingest_file(path)["image"])
    px = np.asarray(stored)
    assert px[0, 0, 0] == 128 and px[0, 299, 0] == 255


def test_clean_jpeg_keeps_its_original_bytes_and_key_is_content_hash(tmp_path):
    import hashlib

    data = jpeg_bytes(noise_image(500, 400))
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    row = ingest_file(path)
    assert row["image"] == data and row["reencoded"] is None and row["image_ext"] == "jpg"
    assert row["key"] == hashlib.sha256(data).hexdigest()[:20]


@pytest.mark.parametrize("limit, reason", [("max_file_bytes", "too_large_file"), ("max_side", "too_large")])
def test_size_limits(tmp_path, limit, reason):
    path = tmp_path / "a.png"
    noise_image(900, 700).save(path)
    value = 1000 if limit == "max_file_bytes" else 800
    assert ingest_file(path, **{limit: value})["reason"] == reason


def photo_bytes(fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    noise_image(640, 480, seed=7).save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.mark.parametrize("name, fmt, save", [
    ("IMG_0001.HEIC", "HEIF", {}),
    ("b.avif", "AVIF", {}),
    ("c.mpo", "MPO", {"save_all": True, "append_images": [noise_image(320, 240, seed=8)]}),
])
def test_phone_photo_formats_are_decoded_and_stored_as_jpeg(tmp_path, name, fmt, save):
    """A lossy photo format that the corpus does not keep is stored as JPEG (q95), not as a PNG
    several times its size."""
    path = tmp_path / name
    path.write_bytes(photo_bytes(fmt, **save))
    row = ingest_file(path)
    assert row["status"] == "ok", row["detail"]
    assert (row["width"], row["height"], row["image_ext"]) == (640, 480, "jpg")
    assert Image.open(io.BytesIO(row["image"])).format == "JPEG"
    assert "stored as JPEG" in row["reencoded"]


@pytest.mark.parametrize("fmt, keep", [("HEIF", 0.6), ("AVIF", 0.6), ("HEIF", 0.05)])
def test_a_cut_off_heic_or_avif_photo_is_truncated(tmp_path, fmt, keep):
    data = photo_bytes(fmt)
    path = tmp_path / "cut.heic"
    path.write_bytes(data[: int(len(data) * keep)])
    row = ingest_file(path)
    assert row["reason"] == "truncated" and f"{fmt} data incomplete" in row["detail"], row["detail"]


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_the_decompression_bomb_guard_holds_for_heic_and_avif(tmp_path, fmt):
    path = tmp_path / "big.heic"
    path.write_bytes(photo_bytes(fmt))  # 640x480 = 307,200 pixels
    row = ingest_file(path, max_pixels=150_000)
    assert row["reason"] == "decompression_bomb", row["detail"]


def test_a_macos_appledouble_file_is_named_as_such(tmp_path):
    """Copied from a Mac to a FAT or network drive, every ``photo.jpg`` gets a ``._photo.jpg`` beside it:
    4 KB of metadata (AppleDouble), which the quarantine names for what it is."""
    path = tmp_path / "._photo.jpg"
    path.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4000))
    row = ingest_file(path)
    assert row["reason"] == "not_an_image"
    assert row["detail"] == "an AppleDouble file (macOS metadata of the file beside it), not an image"


def test_an_inputs_pixel_limit_does_not_outlive_its_decoding(tmp_path):
    """The limit was left set in the process: a test (or a stage) decoding later met another's limit."""
    before = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "a.png"
    noise_image(640, 480).save(path)
    assert ingest_file(path, max_pixels=150_000)["reason"] == "decompression_bomb"
    assert Image.MAX_IMAGE_PIXELS == before


def test_a_heic_photos_orientation_is_applied_once(tmp_path):
    """libheif turns the image by its orientation and resets the EXIF tag: not turned a second time."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    path = tmp_path / "r.heic"
    path.write_bytes(photo_bytes("HEIF", exif=exif.tobytes()))
    row = ingest_file(path)
    assert (row["width"], row["height"]) == (480, 640)
