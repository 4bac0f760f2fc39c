"""Gallery: a few random samples drawn with their boxes and captions (like PS3 Fig. 15/16).

The only part of `curate stats` that opens shards: each sample is read by offset via the index.
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from curate.io.layout import OutputLayout
from curate.io.objpath import OutputPath, read_parquet, read_slice

COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def caption_lines(record: dict) -> list[tuple[tuple[int, int, int], str]]:
    """(colour, text) under a gallery picture: each caption by its box number, and each reason for
    having none once, with the numbers of the boxes it applies to."""
    lines = []
    uncaptioned: dict[str, list[int]] = {}
    for i, region in enumerate(record.get("regions", [])):
        if region.get("caption"):
            lines.append((COLOURS[i % len(COLOURS)], f"{i + 1}. " + " ".join(region["caption"].split())))
        else:
            uncaptioned.setdefault(region.get("caption_skipped") or "no caption", []).append(i + 1)
    for reason, numbers in uncaptioned.items():
        lines.append(((90, 90, 90), f"{', '.join(map(str, numbers))}. ({' '.join(reason.split())})"))
    return lines


def draw_sample(image: Image.Image, record: dict, max_side: int = 900) -> Image.Image:
    """The image scaled to ``max_side`` with numbered boxes, and a caption panel below it."""
    scale = min(1.0, max_side / max(image.size))
    shown = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(shown)
    font = ImageFont.load_default(size=16)
    for i, region in enumerate(record.get("regions", [])):
        colour = COLOURS[i % len(COLOURS)]
        x0, y0, x1, y1 = (v * scale for v in region["box"])
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=3)
        draw.text((x0 + 4, y0 + 2), str(i + 1), fill=colour, font=font)
    lines = caption_lines(record)
    wrapped = [(c, w) for c, t in lines for w in textwrap.wrap(t[:400], width=max(30, shown.width // 9))]
    panel_h = 24 + 20 * len(wrapped)
    canvas = Image.new("RGB", (shown.width, shown.height + panel_h), "white")
    canvas.paste(shown, (0, 0))
    text_draw = ImageDraw.Draw(canvas)
    title = f"{record['key']}  {record['kind']}  {record['width']}x{record['height']}"
    text_draw.text((6, shown.height + 4), title, fill=(60, 60, 60), font=font)
    for row, (colour, line) in enumerate(wrapped):
        text_draw.text((6, shown.height + 24 + 20 * row), line, fill=colour, font=font)
    return canvas


def write_gallery(out_dir: OutputPath, folder: Path, n: int = 6, seed: int = 0) -> list[str]:
    layout = OutputLayout.at(out_dir)
    index = read_parquet(layout.index, columns=["key", "shard", "image_offset", "image_size", "json_offset",
                                                 "json_size"])
    if index.num_rows == 0:
        return []
    rows = np.random.default_rng(seed).choice(index.num_rows, size=min(n, index.num_rows), replace=False)
    files = []
    for i, row in enumerate(sorted(int(r) for r in rows)):
        hit = index.slice(row, 1).to_pylist()[0]
        shard = layout.shards_dir / hit["shard"]
        record = json.loads(read_slice(shard, hit["json_offset"], hit["json_size"]))
        image = Image.open(io.BytesIO(read_slice(shard, hit["image_offset"], hit["image_size"])))
        name = f"gallery-{i:02d}.png"
        draw_sample(image, record).save(folder / name)
        files.append(name)
    return files
