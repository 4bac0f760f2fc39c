"""The pipeline's mask stage (masks + salient boxes) as configured in pipelines/ps3.yaml, on real images.

    python benchmarks/regions_stage.py --images data/samples --out /tmp/regions   # GPU machine

Runs curate.stages.regions.RegionsStage exactly as a Ray actor does (config -> backend -> checkpoint
load -> batched AMG -> box selection -> rows), without Ray. No real checkpoint can be downloaded here,
so a random EfficientViT-SAM-XL1 made confident (see curate.testing.tiny_sam.make_confident) is saved as the
checkpoint file the config points at: timings are real, boxes are not meaningful. Writes per-image
timings and box counts, and a PNG with the boxes of a few images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.amg.build import build_efficientvit_sam  # noqa: E402
from curate.config import load_config  # noqa: E402
from curate.ops.decode import ingest_row  # noqa: E402
from curate.rows import new_row  # noqa: E402
from curate.stages.regions import RegionsStage  # noqa: E402
from curate.testing.tiny_sam import make_confident  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="xl1")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--checkpoint", type=Path, help="real EfficientViT-SAM weights (default: random, confident)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or Path("/tmp") / f"random_confident_evit_{args.model}.pt"
    if args.checkpoint is None:
        torch.manual_seed(0)
        torch.save(make_confident(build_efficientvit_sam(args.model)).net.state_dict(), checkpoint)
    cfg = load_config(REPO / "pipelines" / "ps3.yaml", [
        f"masks.natural.checkpoint={checkpoint}", f"masks.natural.model={args.model}",
        f"masks.natural.batch_size={args.batch_size}",
        "ingest.min_side=256"])
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".jpeg", ".webp"})
    rows = [ingest_row(new_row(str(p), "bench"), cfg.ingest) for p in files]
    for r in rows:
        if r["status"] != "ok":
            print(f"skipped {r['uri']}: {r['reason']}: {r['detail']}")
    rows = [r for r in rows if r["status"] == "ok"]
    if not rows:
        raise SystemExit(f"{args.images}: no usable image")
    t0 = time.perf_counter()
    stage = RegionsStage(cfg)
    load_s = time.perf_counter() - t0
    stage.process(rows[: args.batch_size])  # warm-up (kernels, autotuning)
    per_batch = []
    start = time.perf_counter()
    for i in range(0, len(rows), args.batch_size):
        batch = rows[i:i + args.batch_size]
        for r in batch:
            r["regions"], r["events"] = "[]", "{}"
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        t = time.perf_counter()
        stage.process(batch)
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        per_batch.append((time.perf_counter() - t) / len(batch))
    total = time.perf_counter() - start
    images = []
    for r in rows:
        events = json.loads(r["events"])
        images.append({"uri": Path(r["uri"]).name, "size": f"{r['width']}x{r['height']}", "kind": r["kind"],
                       "masks": events.get("regions.masks", 0), "boxes": events.get("regions.boxes", 0)})
    result = {
        "hardware": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "backend": stage.generator.describe(), "images": len(rows), "batch_size": args.batch_size,
        "model_load_s": round(load_s, 2), "seconds_per_image_mean": round(total / len(rows), 3),
        "seconds_per_image_median_batch": round(statistics.median(per_batch), 3),
        "images_per_s": round(len(rows) / total, 3),
        "masks_per_image_mean": round(statistics.mean(i["masks"] for i in images), 1),
        "boxes_per_image_mean": round(statistics.mean(i["boxes"] for i in images), 2),
        "per_image": images,
    }
    (args.out / "regions_stage.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "per_image"}))
    draw_boxes(rows[:4], args.out / "regions_stage_boxes.png")
    if args.checkpoint is None:
        checkpoint.unlink()


def draw_boxes(rows: list[dict], path: Path) -> None:
    import io

    tiles = []
    for r in rows:
        img = Image.open(io.BytesIO(r["image"])).convert("RGB")
        draw = ImageDraw.Draw(img)
        for region in json.loads(r["regions"]):
            draw.rectangle(region["box"], outline=(255, 0, 0), width=max(3, img.width // 300))
        img.thumbnail((512, 512))
        tiles.append(img)
    sheet = Image.new("RGB", (512 * len(tiles), 512), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (512 * i, 0))
    sheet.save(path)


if __name__ == "__main__":
    main()
