"""The mask stage on images of (nearly) all different sizes: first-sight cost, steady state, memory.

    python benchmarks/varied_sizes.py --count 300 --out /tmp/varied.json                 # GPU machine
    python benchmarks/varied_sizes.py --tiny --count 6 --single 2 --device cpu --points-per-side 4   # CPU smoke

A real corpus has thousands of image sizes. This runs the pipeline's mask generator (settings of
pipelines/ps3.yaml, PS3 Table 10) over ``--count`` images from ``curate.samples.varied_image``
(long side 1K-4K, aspect 1:3 to 3:1, photos and pages; every size its own), in the pipeline's
batches, three times over one loaded model:

1. ``single``: ``--single`` photos all of one size (2048x1536), after one warm-up batch: the
   single-size figure.
2. ``first sight``: the varied set, each batch timed, with the compiled kernel variants (Triton's
   caches), captured CUDA graphs and reserved GPU memory after it.
3. ``steady``: the varied set again, nothing new to compile.

Reports steady seconds per image against the single-size figure (the ratio), what the first
sight cost above the steady time and which variants it compiled, and peak reserved memory after
each pass. Masks come from ``--masks realistic`` (curate.amg.stand_in: smooth regions,
a few hundred survivors, as trained SAM) or ``noise`` (make_confident's random decoder).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.amg import BatchedMaskGenerator  # noqa: E402
from curate.amg.build import build_efficientvit_sam  # noqa: E402
from curate.amg.stand_in import make_segmenting  # noqa: E402
from curate.backends.masks_sam import amg_params  # noqa: E402
from curate.config import load_config  # noqa: E402
from curate.samples import natural_photo, varied_image  # noqa: E402
from curate.testing.tiny_sam import make_confident, tiny_efficientvit_sam  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _varied(index: int) -> tuple[np.ndarray, str]:
    image, kind = varied_image(index)
    return np.asarray(image), kind


def _single(index: int) -> np.ndarray:
    photo, _ = natural_photo(index)
    return np.asarray(photo.resize((2048, 1536)))


def compiled_variants() -> dict[str, int]:
    """Compiled variants per Triton kernel of curate.amg (sizes of Triton's in-memory caches)."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    from curate.amg import triton_attention, triton_candidates, triton_preprocess, triton_stats, triton_upscale

    counts = {}
    for module in (triton_attention, triton_candidates, triton_preprocess, triton_stats, triton_upscale):
        for name, obj in vars(module).items():
            fn = obj.fn if isinstance(obj, Autotuner) else obj
            if isinstance(fn, JITFunction):  # device_caches: device -> (kernel cache, ...) in Triton 3.x
                caches = getattr(fn, "device_caches", {})
                counts[name] = sum(len(c[0]) if isinstance(c, tuple) else len(c) for c in caches.values())
    return counts


def graph_count(generator: BatchedMaskGenerator) -> int:
    return sum(len(getattr(part, "_graphs", {})) for part in (generator._decode, generator._encode_batch))


def run_pass(generator, images, batch_size, device, watch: bool) -> list[dict]:
    rows = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        before = compiled_variants() if watch else {}
        graphs = graph_count(generator)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        generator.generate(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        row = {"seconds": time.perf_counter() - t, "images": len(batch),
               "megapixels": sum(im.shape[0] * im.shape[1] for im in batch) / 1e6}
        if watch:
            after = compiled_variants()
            row["new_variants"] = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
            row["new_graphs"] = graph_count(generator) - graphs
        if device == "cuda":
            row["reserved_gib"] = torch.cuda.memory_reserved() / 2**30
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    seconds = sum(r["seconds"] for r in rows)
    images = sum(r["images"] for r in rows)
    return {"images": images, "seconds": round(seconds, 3), "seconds_per_image": round(seconds / images, 4),
            "seconds_per_megapixel": round(seconds / sum(r["megapixels"] for r in rows), 4),
            "median_batch_seconds_per_image": round(statistics.median(r["seconds"] / r["images"] for r in rows), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--single", type=int, default=48, help="images in the single-size pass")
    ap.add_argument("--model", default="xl1")
    ap.add_argument("--tiny", action="store_true", help="tiny random EfficientViT-SAM (CPU smoke test)")
    ap.add_argument("--masks", choices=["realistic", "noise"], default="realistic")
    ap.add_argument("--points-per-side", type=int, default=0, help="override the config's (0 keeps it)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=8, help="processes drawing the images")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    cfg = load_config(REPO / "pipelines" / "ps3.yaml", [])
    section = cfg.masks.natural
    if args.points_per_side:
        section = section.model_copy(update={"points_per_side": args.points_per_side})
    params = amg_params(section, args.device)
    torch.manual_seed(0)
    model = tiny_efficientvit_sam(0) if args.tiny else build_efficientvit_sam(args.model)
    model = make_segmenting(model) if args.masks == "realistic" else make_confident(model)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model.to(args.device, dtype)
    generator = BatchedMaskGenerator(model, params)
    batch_size = section.batch_size

    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        drawn = list(pool.map(_varied, range(args.count), chunksize=4))
        single = list(pool.map(_single, range(args.single), chunksize=4))
    varied = [image for image, _ in drawn]
    sizes = {image.shape[:2] for image in varied}
    print(f"drew {len(varied)} images ({len(sizes)} sizes, {sum(k == 'document' for _, k in drawn)} pages) "
          f"and {len(single)} of 2048x1536 in {time.perf_counter() - t:.1f}s", flush=True)

    run_pass(generator, single[:batch_size], batch_size, args.device, watch=False)  # warm-up of one size
    single_rows = run_pass(generator, single, batch_size, args.device, watch=False)
    single_summary = summary(single_rows)
    print("single", json.dumps(single_summary), flush=True)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first = run_pass(generator, varied, batch_size, args.device, watch=args.device == "cuda")
    peak_first = torch.cuda.max_memory_reserved() / 2**30 if args.device == "cuda" else None
    first_summary = summary(first)
    print("first sight", json.dumps(first_summary), flush=True)
    steady = run_pass(generator, varied, batch_size, args.device, watch=args.device == "cuda")
    peak_steady = torch.cuda.max_memory_reserved() / 2**30 if args.device == "cuda" else None
    steady_summary = summary(steady)
    print("steady", json.dumps(steady_summary), flush=True)

    compiling = [i for i, r in enumerate(first) if r.get("new_variants") or r.get("new_graphs")]
    excess = [first[i]["seconds"] - steady[i]["seconds"] for i in compiling]
    variants: dict[str, int] = {}
    for i in compiling:
        for name, n in first[i]["new_variants"].items():
            variants[name] = variants.get(name, 0) + n
    result = {
        "hardware": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "model": "tiny" if args.tiny else args.model, "masks": args.masks,
        "params": {k: getattr(params, k) for k in ("points_per_side", "crop_n_layers", "decode_batch")},
        "batch_size": batch_size, "distinct_sizes": len(sizes),
        "single": single_summary, "first_sight": first_summary, "steady": steady_summary,
        "steady_over_single": round(steady_summary["seconds_per_image"] / single_summary["seconds_per_image"], 3),
        "batches_compiling": len(compiling), "batches": len(first),
        "first_sight_excess_s": {"total": round(sum(excess), 2),
                                 "per_batch": [round(e, 3) for e in excess]},
        "new_variants": variants, "new_graphs": sum(r.get("new_graphs", 0) for r in first),
        "peak_reserved_gib": {"first_sight": peak_first, "steady": peak_steady},
        "masks_per_image_last_batch": None,
        "first_sight_batches": first, "steady_batches": steady,
    }
    last = generator.generate(varied[-batch_size:])
    result["masks_per_image_last_batch"] = [int(len(m.areas)) for m in last]
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_batches")}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
