"""The offline sample set: rendered document pages and natural photographs, 1K-4K.

Documents are pages of known text rendered with Pillow's bundled TrueType font (so OCR can be
checked against what was drawn). Natural images are the photographs that ship inside
scikit-image (``skimage.data``), upscaled with Lanczos to 1K-4K: real scenes, but their fine
detail is that of the originals (at most ~1.4K), which the file names say (``-upscaled``).
Generation is deterministic; a ``truth.json`` beside the images lists the text of each page.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WORDS = (
    "invoice total amount shipping address order number date payment account customer service "
    "report summary quarterly revenue growth market analysis section figure table results method "
    "data model training image resolution region caption benchmark encoder vision language "
    "station platform departure arrival schedule weekday weekend museum library entrance ticket"
).split()

# (skimage.data name, target long side in pixels)
PHOTOS = [
    ("astronaut", 1536), ("coffee", 2048), ("chelsea", 1600), ("rocket", 2560),
    ("stereo_motorcycle", 3840), ("hubble_deep_field", 2400), ("retina", 2816), ("immunohistochemistry", 1200),
]
PAGE_SIZES = [(1700, 2200), (2480, 3508), (1275, 1650), (2200, 1700)]


def page_lines(rng: random.Random, n_lines: int) -> list[str]:
    lines = []
    for i in range(n_lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        if rng.random() < 0.5:
            words.append(str(rng.randint(10, 99999)))
        line = " ".join(words)
        lines.append(line.capitalize() if i % 4 else line.upper())
    return lines


def render_document(index: int) -> tuple[Image.Image, list[str]]:
    """A page with a title, paragraphs at several font sizes, and a boxed table-like block."""
    rng = random.Random(1000 + index)
    width, height = PAGE_SIZES[index % len(PAGE_SIZES)]
    page = Image.new("RGB", (width, height), (250, 250, 247))
    draw = ImageDraw.Draw(page)
    unit = width / 1700
    margin = int(120 * unit)
    y = margin
    texts: list[str] = []
    title_font = ImageFont.load_default(size=int(64 * unit))
    title = f"DOCUMENT {index + 1} " + " ".join(rng.choice(WORDS) for _ in range(3)).upper()
    draw.text((margin, y), title, font=title_font, fill=(20, 20, 20))
    texts.append(title)
    y += int(110 * unit)
    for block in range(rng.randint(3, 5)):
        size = int(rng.choice([22, 28, 34, 40]) * unit)
        font = ImageFont.load_default(size=size)
        for line in page_lines(rng, rng.randint(3, 7)):
            if y + size * 2 > height - margin:
                break
            draw.text((margin, y), line, font=font, fill=(30, 30, 40))
            texts.append(line)
            y += int(size * 1.6)
        y += int(40 * unit)
        if block == 1 and y + int(300 * unit) < height - margin:
            x0, y0 = margin, y
            draw.rectangle([x0, y0, width - margin, y0 + int(260 * unit)], outline=(60, 60, 60), width=3)
            small = ImageFont.load_default(size=int(24 * unit))
            for r in range(4):
                row = f"Item {r + 1}   {rng.choice(WORDS)}   {rng.randint(1, 999)}.{rng.randint(10, 99)}"
                draw.text((x0 + int(30 * unit), y0 + int((20 + 60 * r) * unit)), row, font=small, fill=(0, 0, 0))
                texts.append(row)
            y = y0 + int(300 * unit)
    return page, texts


def natural_photo(index: int) -> tuple[Image.Image, str]:
    from skimage import data

    name, long_side = PHOTOS[index % len(PHOTOS)]
    arr = getattr(data, name)()
    if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
        arr = arr[0]
    img = Image.fromarray(arr).convert("RGB")
    scale = long_side / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    return img, name


def generate_samples(out_dir: str | Path, count: int = 16) -> Path:
    """Write ``count`` images (half documents, half photos) to ``out_dir``; idempotent."""
    out = Path(out_dir)
    truth_path = out / "truth.json"
    if truth_path.exists() and json.loads(truth_path.read_text()).get("count") == count:
        return out
    for sub in ("documents", "natural"):  # a set of another size: replace it, leave no stale image
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    (out / "documents").mkdir(parents=True, exist_ok=True)
    (out / "natural").mkdir(parents=True, exist_ok=True)
    truth: dict = {"count": count, "documents": {}, "natural": {}}
    n_docs = (count + 1) // 2
    for i in range(n_docs):
        page, texts = render_document(i)
        name = f"documents/page-{i:03d}.png"
        page.save(out / name, optimize=False, compress_level=6)
        truth["documents"][name] = texts
    for i in range(count - n_docs):
        img, source = natural_photo(i)
        name = f"natural/{source}-{i:03d}-upscaled.jpg"
        img.save(out / name, quality=92)
        truth["natural"][name] = source
    truth_path.write_text(json.dumps(truth, indent=1))
    return out


# ---------------------------------------------------------------- low-res VQA samples (canvas augmentation)

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
           "purple": (140, 60, 180), "orange": (245, 140, 30)}


def vqa_scene(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, list[tuple[str, str]]]:
    """A drawn scene and question/answer pairs that are true of it by construction."""
    img = Image.new("RGB", size, (245, 245, 240))
    draw = ImageDraw.Draw(img)
    n_squares = rng.randint(1, 4)
    circle_colour = rng.choice(sorted(COLOURS))
    w, h = size
    r = min(w, h) // 6
    cx, cy = rng.randint(r, w // 2 - r // 2), rng.randint(r, h - r)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[circle_colour])
    square_colour = rng.choice(sorted(set(COLOURS) - {circle_colour}))
    side = min(w, h) // 8
    for i in range(n_squares):
        x = w // 2 + 10 + i * (side + 8) % max(1, w // 2 - side - 10)
        y = 10 + (i * (side + 12)) % max(1, h - side - 10)
        draw.rectangle((x, y, x + side, y + side), fill=COLOURS[square_colour])
    word = rng.choice(WORDS)
    font = ImageFont.load_default(size=max(12, h // 12))
    draw.text((10, h - h // 8), word.upper(), fill=(20, 20, 20), font=font)
    qa = [("What colour is the circle?", circle_colour.capitalize() + "."),
          ("How many squares are in the picture?", str(n_squares)),
          ("What word is written at the bottom left?", word.upper())]
    return img, qa


def generate_vqa_samples(out_dir: Path, count: int = 12, seed: int = 0) -> Path:
    """Low-res (224-640 px) VQA images with true QA, as LLaVA JSON + images/ and as vqa.parquet."""
    import io as _io

    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    entries, rows = [], []
    for i in range(count):
        size = (rng.randint(224, 640), rng.randint(224, 480))
        img, qa = vqa_scene(rng, size)
        name = f"vqa-{i:04d}.png"
        img.save(out_dir / "images" / name)
        conversations = []
        for j, (q, a) in enumerate(qa):
            conversations += [{"from": "human", "value": ("<image>\n" if j == 0 else "") + q},
                              {"from": "gpt", "value": a}]
        entries.append({"id": f"vqa-{i:04d}", "image": name, "conversations": conversations})
        buf = _io.BytesIO()
        img.save(buf, format="PNG")
        rows.append({"id": f"vqa-{i:04d}", "image": {"bytes": buf.getvalue(), "path": None},
                     "question": qa[0][0], "answer": qa[0][1]})
    (out_dir / "llava.json").write_text(json.dumps(entries, indent=1))
    pq.write_table(pa.Table.from_pylist(rows), out_dir / "vqa.parquet")
    return out_dir


# ---------------------------------------------------------------- varied sizes (GPU throughput benchmarks)

def varied_size(rng: random.Random) -> tuple[int, int]:
    """(width, height): long side 1,024-4,096, aspect ratio 1:3 to 3:1 (log-uniform)."""
    long_side = rng.randint(1024, 4096)
    aspect = 3 ** rng.uniform(-1, 1)  # width / height
    if aspect >= 1:
        return long_side, max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), long_side


def varied_image(index: int, seed: int = 0, page_share: float = 0.3) -> tuple[Image.Image, str]:
    """Image ``index`` of a set where nearly every image has its own size: a photo (scaled to cover
    and centre-cropped) or a rendered page (scaled to fit); returns it and its kind."""
    rng = random.Random(f"{seed}-{index}")
    width, height = varied_size(rng)
    if rng.random() < page_share:
        page, _ = render_document(index)
        return page.resize((width, height), Image.Resampling.BICUBIC), "document"
    photo, _ = natural_photo(index)
    scale = max(width / photo.width, height / photo.height)
    cover = photo.resize((max(width, round(photo.width * scale)), max(height, round(photo.height * scale))),
                         Image.Resampling.BICUBIC)
    left, top = (cover.width - width) // 2, (cover.height - height) // 2
    return cover.crop((left, top, left + width, top + height)), "natural"


def varied_name(index: int, kind: str, width: int, height: int) -> str:
    """A file name that lists in index order, so pages and photos come mixed as in one folder of a
    real corpus (names that began with the kind listed every page before the first photo)."""
    if kind == "document":
        return f"{index:05d}-page-{width}x{height}.png"
    return f"{index:05d}-photo-{width}x{height}.jpg"


def _write_varied(out: Path, index: int, seed: int) -> None:
    image, kind = varied_image(index, seed)
    name = varied_name(index, kind, image.width, image.height)
    if kind == "document":
        image.save(out / name, compress_level=1)
    else:
        image.save(out / name, quality=90)


def generate_varied_samples(out_dir: str | Path, count: int = 300, seed: int = 0, workers: int = 1) -> Path:
    """Write ``count`` images of ``varied_image`` to ``out_dir`` (pages as PNG, photos as JPEG),
    drawn by ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write = partial(_write_varied, out, seed=seed)
    if workers <= 1:
        for i in range(count):
            write(i)
        return out
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write, range(count), chunksize=4))
    return out
