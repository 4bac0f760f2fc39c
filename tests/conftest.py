"""Shared fixtures: image factories for every kind of input, and a small local pipeline config."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def gpu_only(reason: str = "needs a CUDA GPU"):
    """Mark a test (or a parameter) as GPU work: the ``gpu`` marker, and a skip where CUDA is absent."""
    import torch

    return [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=reason)]


def apply_marks(marks):
    def wrap(fn):
        for mark in reversed(marks):
            fn = mark(fn)
        return fn
    return wrap

# Without a GPU, Triton kernels that a test calls explicitly run under Triton's interpreter (numpy);
# it must be chosen before the kernels are defined. Automatic backends still pick torch on the CPU.
if not os.path.exists("/dev/nvidia0") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(arr, "RGB")


def exif_rotated_jpeg(width: int, height: int, orientation: int = 6) -> bytes:
    img = noise_image(width, height, seed=3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(img, exif=exif.tobytes())


def write_hostile_inputs(folder: Path) -> dict[str, str]:
    """Write one file per bad-input kind; returns file name -> expected outcome
    ('ok' or the quarantine reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = noise_image(640, 480, seed=1)
    jpg = jpeg_bytes(good)
    png = png_bytes(good)
    files: dict[str, tuple[bytes | None, str]] = {
        "good.jpg": (jpg, "ok"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "zero.jpg": (b"", "empty_file"),
        "random.png": (os.urandom(4096), "not_an_image"),
        "text.jpg": (b"this is not an image at all\n" * 20, "not_an_image"),
        "cmyk.jpg": (jpeg_bytes(noise_image(640, 480, seed=4).convert("CMYK")), "ok"),
        "gray16.png": (png_bytes(Image.fromarray(
            (np.arange(640 * 480, dtype=np.uint32).reshape(480, 640) % 65536).astype(np.uint16))), "ok"),
        "palette_alpha.png": (png_bytes(_palette_with_alpha()), "ok"),
        "la.png": (png_bytes(noise_image(640, 480, seed=5).convert("LA")), "ok"),
        "exif_rotated.jpg": (exif_rotated_jpeg(640, 400), "ok"),
        "extreme_aspect.png": (png_bytes(Image.new("RGB", (8000, 300), "white")), "extreme_aspect"),
        "tiny.png": (png_bytes(Image.new("RGB", (40, 30), "white")), "too_small"),
        "bomb.png": (png_bytes(Image.new("1", (20000, 20000))), "decompression_bomb"),
        "truncated.webp": (_webp(good)[: len(_webp(good)) * 6 // 10], "truncated"),
        "line.png": (png_bytes(Image.new("L", (100000, 1), 128)), "too_small"),
        "bad_exif.jpg": (_bad_exif_jpeg(good), "ok"),
        "huge_icc.jpg": (jpeg_bytes(good, icc_profile=os.urandom(2 * 1024 * 1024)), "ok"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    loop = folder / "loop.jpg"
    if not loop.is_symlink():
        os.symlink("loop.jpg", loop)  # a symlink pointing at itself
    fifo = folder / "fifo.jpg"
    if not fifo.exists():
        os.mkfifo(fifo)  # reading it would block forever: must be refused, not opened
    # A name that is not valid UTF-8 (bytes straight from the filesystem).
    with open(os.path.join(os.fsencode(folder), b"bad-\xff\xfename.jpg"), "wb") as f:
        f.write(jpg)
    expected = {name: outcome for name, (_, outcome) in files.items()}
    expected.update({"loop.jpg": "unreadable", "fifo.jpg": "unreadable", "bad-\\xff\\xfename.jpg": "unreadable"})
    return expected


def _webp(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=80)
    return buf.getvalue()


def _bad_exif_jpeg(img: Image.Image) -> bytes:
    """A JPEG whose APP1 EXIF segment is garbage after its header."""
    data = jpeg_bytes(img)
    garbage = b"Exif\x00\x00" + os.urandom(300)
    segment = b"\xff\xe1" + (len(garbage) + 2).to_bytes(2, "big") + garbage
    return data[:2] + segment + data[2:]


def _palette_with_alpha() -> Image.Image:
    img = noise_image(640, 480, seed=6).convert("P")
    img.info["transparency"] = 0
    return img


@pytest.fixture
def hostile_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "hostile"
    return folder, write_hostile_inputs(folder)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    from curate.samples import generate_samples

    return generate_samples(tmp_path_factory.mktemp("samples"), count=6)


def local_overrides(out: Path, sources_path: Path) -> list[str]:
    """Settings that keep test runs short on 2 cores without changing any code path."""
    return [f"output.path={out}", f"sources.0.path={sources_path}", "sources.0.type=dir",
            "output.shard_max_samples=2", "masks.natural.work_side=640", "ray.progress=false"]


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory) -> Path:
    """A randomly initialised Qwen2-VL checkpoint directory (tokenizer, processor, weights)."""
    from curate.testing.random_models import save_random_qwen2_vl

    return save_random_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A randomly initialised Llama checkpoint directory (tokenizer with chat template, weights)."""
    from curate.testing.random_models import save_random_llama

    return save_random_llama(tmp_path_factory.mktemp("tiny-llama"))


def record_warm_up(monkeypatch, module, backend_cls, method: str) -> list[tuple[int, int]]:
    """Force ``module.compiles_decoding`` to say yes for a static cache (compiling is GPU-only) and record
    each ``backend_cls.method`` call as (items, most tokens generated): what a backend's warm-up ran."""
    monkeypatch.setattr(module, "compiles_decoding",
                        lambda model, kwargs: kwargs.get("cache_implementation") == "static")
    seen: list[tuple[int, int]] = []
    real = getattr(backend_cls, method)

    def recording(self, items, **extra):
        generations = real(self, items, **extra)
        seen.append((len(items), max(g.tokens for g in generations)))
        return generations

    monkeypatch.setattr(backend_cls, method, recording)
    return seen


def prompt_sensitive(model):
    """A tiny random language model whose text depends on its prompt: at the default init scale every
    prompt gets the same noise, which could not tell a wrong layout from a right one (2-D weights x6)."""
    import torch

    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.ndim == 2):
            weight.mul_(6)
    return model
