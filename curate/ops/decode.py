"""Decode and validate one input: read, check, orient and normalise it, or quarantine it with a reason.

Stored bytes are the input's own unless it must change: EXIF rotation, a mode other than 8-bit
RGB/L (CMYK, 16-bit, palette, alpha, ...), or a format other than JPEG/PNG/WebP. Then the normalised
RGB image is re-encoded (JPEG q95 for JPEG and other lossy photo formats, PNG otherwise) and
``reencoded`` says why.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from curate.config import IngestConfig
from curate.io import fs
from curate.ops.route import route_kind
from curate.records import QuarantineReason as Q
from curate.rows import quarantine

KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# Lossy photo formats a corpus does not keep: stored as JPEG, since as PNG a 4K photo is several times larger.
PHOTO_FORMATS = {"MPO", "HEIF", "AVIF"}

pillow_heif.register_heif_opener()  # HEIC/HEIF (phone cameras' format) through libheif; AVIF is Pillow's own


class Rejected(Exception):
    def __init__(self, reason: Q, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def read_input(row: dict, max_bytes: int, timeout: float | None = None) -> bytes:
    uri = row["uri"]
    try:
        if row["tar_uri"] is not None:
            if row["tar_size"] > max_bytes:
                raise Rejected(Q.too_large_file, f"{row['tar_size']} bytes > max_file_bytes {max_bytes}")
            data = fs.read_range(row["tar_uri"], row["tar_offset"], row["tar_size"], timeout)
            if len(data) < row["tar_size"]:
                raise Rejected(Q.truncated, f"tar member cut short: {len(data)} of {row['tar_size']} bytes")
        else:
            local = fs.local_path(uri)
            if local is not None:
                problem = fs.local_file_problem(local)
                if problem:  # a FIFO or device would block the read forever
                    raise Rejected(Q.unreadable, problem)
            data = fs.read_capped(uri, max_bytes, timeout)
    except Rejected:
        raise
    except (OSError, ValueError) as e:
        raise Rejected(Q.unreadable, f"cannot read: {e}") from e
    if len(data) == 0:
        raise Rejected(Q.empty_file, "zero-byte file")
    if len(data) > max_bytes:
        raise Rejected(Q.too_large_file, f"file larger than max_file_bytes {max_bytes}")
    return data


# Formats Pillow may open: what image corpora hold. Others (EPS would run Ghostscript, PDF, PSD,
# ICO, ...) are quarantined as not_an_image without their decoder ever running.
# A multi-picture JPEG (MPO, phone cameras) opens through the JPEG entry; "MPO" names no opener of its own.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")


SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF", b"BM": "BMP"}
# ISO base media file brands (bytes 8-12, after "ftyp") of the HEIF family
HEIF_BRANDS = {b"heic": "HEIF", b"heix": "HEIF", b"heim": "HEIF", b"heis": "HEIF", b"hevc": "HEIF",
               b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def image_signature(data: bytes) -> str | None:
    """The format named by the file's first bytes, if it is one we read."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp":
        return HEIF_BRANDS.get(data[8:12])
    return next((name for magic, name in SIGNATURES.items() if data.startswith(magic)), None)


APPLE_DOUBLE = b"\x00\x05\x16\x07"  # the magic of macOS's ``._NAME`` metadata files


@contextmanager
def bomb_guard(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit at ``max_pixels`` (its warning an error) while one input opens,
    and the process's own limit back afterwards: a test, or another stage in the worker, keeps its own."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def open_checked(data: bytes, cfg: IngestConfig) -> Image.Image:
    """Open and fully decode with the size guards applied before any pixel is decoded."""
    if data.startswith(APPLE_DOUBLE):  # a folder copied from a Mac holds one beside every photo
        raise Rejected(Q.not_an_image, "an AppleDouble file (macOS metadata of the file beside it), not an image")
    with bomb_guard(cfg.max_pixels):
        try:
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Rejected(Q.decompression_bomb, str(e)) from e
        except Exception as e:  # Pillow raises many kinds on corrupt headers
            if isinstance(e, UnidentifiedImageError) and not image_signature(data):
                raise Rejected(Q.not_an_image, "not a recognised image format") from e
            if isinstance(e, OSError) and image_signature(data):
                # A known signature that Pillow cannot open (WebP decodes on open): cut-off data.
                said = "its header cannot be read" if isinstance(e, UnidentifiedImageError) else e
                raise Rejected(Q.truncated, f"{image_signature(data)} data incomplete: {said}") from e
            raise Rejected(Q.not_an_image, f"cannot parse header: {type(e).__name__}: {e}") from e
        check_geometry(img.width, img.height, cfg)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Rejected(Q.decompression_bomb, str(e)) from e
        except OSError as e:
            raise Rejected(Q.truncated, f"cannot decode pixels: {e}") from e
        except Exception as e:
            if isinstance(e, ValueError) and image_signature(data) == "HEIF":  # libheif's "Unexpected end of file"
                raise Rejected(Q.truncated, f"HEIF data incomplete: {e}") from e
            raise Rejected(Q.not_an_image, f"cannot decode pixels: {type(e).__name__}: {e}") from e
    return img


def check_geometry(width: int, height: int, cfg: IngestConfig) -> None:
    if width <= 0 or height <= 0:
        raise Rejected(Q.too_small, f"zero-sized image {width}x{height}")
    if width * height > cfg.max_pixels:
        raise Rejected(Q.decompression_bomb, f"{width}x{height} exceeds max_pixels {cfg.max_pixels}")
    if min(width, height) < cfg.min_side:
        raise Rejected(Q.too_small, f"{width}x{height}: shorter side below min_side {cfg.min_side}")
    if max(width, height) > cfg.max_side:
        raise Rejected(Q.too_large, f"{width}x{height}: longer side above max_side {cfg.max_side}")
    if max(width, height) / min(width, height) > cfg.max_aspect_ratio:
        raise Rejected(
            Q.extreme_aspect, f"{width}x{height}: aspect ratio above max_aspect_ratio {cfg.max_aspect_ratio}"
        )


def to_8bit_rgb_or_l(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Normalise the pixel mode; returns (image, why it changed or None)."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img, None
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        # Alpha is composited on white, the usual page/background colour.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"mode {mode} composited on white"
    if mode in ("P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        target = "L" if mode == "1" else "RGB"
        return img.convert(target), f"mode {mode} converted to {target}"
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if mode != "F" else (float(arr.min()), float(arr.max()))
        if mode == "I" and arr.max() <= 255 and arr.min() >= 0:
            lo, hi = 0.0, 255.0
        scaled = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L"), f"mode {mode} scaled to 8-bit"
    raise Rejected(Q.unsupported_mode, f"pixel mode {mode} is not supported")


def orient(img: Image.Image) -> tuple[Image.Image, str | None]:
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        return img, None  # unreadable EXIF: keep the pixels as decoded
    if orientation in (None, 1):
        return img, None
    try:
        return ImageOps.exif_transpose(img), f"EXIF orientation {orientation} applied"
    except Exception:
        return img, None


def encode(img: Image.Image, ext: str, quality: int = 95) -> bytes:
    """``img`` as ``ext`` (jpg, png or webp); JPEG and WebP at ``quality``."""
    buf = io.BytesIO()
    if ext == "jpg":
        img.save(buf, format="JPEG", quality=quality)
    elif ext == "webp":
        img.save(buf, format="WEBP", quality=quality)
    else:
        img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def ingest_row(row: dict, cfg: IngestConfig, image_format: str = "keep", quality: int = 95) -> dict:
    """Fill key, sha256, size, kind and stored image bytes, or quarantine the row.

    ``image_format`` ``keep`` stores the input's own bytes unless they must change; ``jpg``/``png``/
    ``webp`` store every image in that format (one format per corpus, for readers that need it)."""
    try:
        data = read_input(row, cfg.max_file_bytes, cfg.read_timeout_s)
        img = open_checked(data, cfg)
        source_format = img.format
        frames = getattr(img, "n_frames", 1)
        img, oriented = orient(img)
        check_geometry(img.width, img.height, cfg)
        img, mode_change = to_8bit_rgb_or_l(img)
    except Rejected as r:
        return quarantine(row, r.reason.value, r.detail)
    why = [w for w in (oriented, mode_change) if w]
    if frames > 1:  # the stored image must be the one that was segmented and captioned
        why.append(f"{frames} frames: the first kept")
    if image_format != "keep":
        ext = image_format
        if KEEP_FORMATS.get(source_format) != ext:
            why.append(f"stored as {ext} (output.image_format)")
    else:
        ext = KEEP_FORMATS.get(source_format) or ("jpg" if source_format in PHOTO_FORMATS else "png")
        if source_format not in KEEP_FORMATS:
            why.append(f"{source_format} stored as {'JPEG' if ext == 'jpg' else 'PNG'}")
    stored = encode(img, ext, quality) if why else data
    sha = hashlib.sha256(data).hexdigest()
    row.update(
        status="ok", key=sha[:20], sha256=sha, image=stored, image_ext=ext,
        reencoded="; ".join(why) or None, width=img.width, height=img.height,
        kind=route_kind(img, row["kind_hint"], cfg.document_white_fraction, cfg.document_max_colorfulness),
        global_caption=row["source_caption"],
    )
    return row
