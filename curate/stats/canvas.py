"""`curate stats` for canvas-augmentation outputs: counts, canvas sizes, pasted-box sizes, backgrounds."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from curate.io.layout import OutputLayout
from curate.io.objpath import OutputPath, read_parquet
from curate.io.reader import shard_samples
from curate.stats.compute import histogram
from curate.stats.models import CanvasStats
from curate.stats.plots import write_histograms
from curate.stats.render import page_html, page_markdown


def compute_canvas_stats(out_dir: OutputPath) -> CanvasStats:
    layout = OutputLayout.at(out_dir)
    manifest = json.loads(layout.manifest.read_text())
    table = read_parquet(layout.index, columns=["width", "height", "box", "background", "turns"])
    width = table["width"].to_numpy(zero_copy_only=False).astype(np.float64)
    height = table["height"].to_numpy(zero_copy_only=False).astype(np.float64)
    boxes = np.array(table["box"].to_pylist(), dtype=np.float64).reshape(-1, 4)
    box_w, box_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    turns = table["turns"].to_numpy(zero_copy_only=False)
    reasons = Counter(q["reason"] for q in manifest["quarantine"])
    return CanvasStats(
        name=manifest["name"], output=str(out_dir), status=manifest["status"],
        wall_seconds=manifest.get("wall_seconds"), counts=manifest["counts"],
        backgrounds=dict(Counter(table["background"].to_pylist())),
        turns_mean=float(turns.mean()) if turns.size else None,
        histograms={
            "canvas_long_side": histogram(np.maximum(width, height), 20, "px"),
            "pasted_long_side": histogram(np.maximum(box_w, box_h), 20, "px"),
            "pasted_area_fraction": histogram(box_w * box_h / np.maximum(width * height, 1), 20, "box area / canvas"),
        },
        quarantine_reasons=dict(sorted(reasons.items())),
    )


def canvas_tables(stats: CanvasStats) -> list[tuple[str, list[str], list[list[str]]]]:
    c = stats.counts
    return [
        ("Counts", ["read", "written", "quarantined", "wall seconds"],
         [[str(c["read"]), str(c["written"]), str(c["quarantined"]),
           f"{stats.wall_seconds:.1f}" if stats.wall_seconds else "-"]]),
        ("Backgrounds", ["kind", "canvases"], [[k, str(v)] for k, v in sorted(stats.backgrounds.items())]),
        ("Conversations", ["mean turns per sample"], [[f"{stats.turns_mean:.1f}" if stats.turns_mean else "-"]]),
        ("Quarantine", ["reason", "inputs"],
         [[k, str(v)] for k, v in stats.quarantine_reasons.items()] or [["none", "0"]]),
    ]


def canvas_gallery(out_dir: OutputPath, folder: Path, n: int) -> list[str]:
    """The first ``n`` canvases with the pasted box outlined and the first question below."""
    names = []
    for shard in OutputLayout.at(out_dir).shard_files():
        for _, members in shard_samples(shard):
            if len(names) >= n:
                break
            record = json.loads(members["json"])
            image = Image.open(io.BytesIO(members[record["image_ext"]])).convert("RGB")
            draw = ImageDraw.Draw(image)
            draw.rectangle(record["box"], outline=(255, 0, 0), width=max(3, image.width // 200))
            image.thumbnail((640, 640))
            sheet = Image.new("RGB", (image.width, image.height + 40), "white")
            sheet.paste(image, (0, 0))
            question = record["conversations"][0]["value"].replace("<image>", "").strip()
            ImageDraw.Draw(sheet).text((6, image.height + 12), question[:90], fill=(0, 0, 0))
            names.append(f"canvas_{len(names):02d}.png")
            sheet.save(folder / names[-1])
        if len(names) >= n:
            break
    return names


def write_canvas_report(out_dir: OutputPath, folder: Path, gallery: int) -> Path:
    stats = compute_canvas_stats(out_dir)
    plots = write_histograms(stats.histograms, stats.name, folder)
    shots = canvas_gallery(out_dir, folder, gallery) if gallery else []
    title = f"Canvas report: {stats.name} ({stats.status})"
    sections = [(None, canvas_tables(stats))]
    (folder / "stats.json").write_text(stats.model_dump_json(indent=2))
    (folder / "report.md").write_text(page_markdown(title, stats.output, sections, plots, shots))
    (folder / "report.html").write_text(page_html(title, stats.output, sections, folder, plots, shots))
    return folder / "report.md"
