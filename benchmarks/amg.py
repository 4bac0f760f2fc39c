"""Automatic mask generation: ours (curate.amg) vs the reference generators, same weights, same run.

    python benchmarks/amg.py --models evit:xl1,sam:vit_h --sizes 1024x1024,2048x1536,3840x2160
    python benchmarks/amg.py --tiny --sizes 400x300 --device cpu      # smoke test without a GPU

Weights are random (no checkpoint can be downloaded here). ``--masks realistic`` (the default and the
headline setting) replaces the decoder's logits by a classical segmentation of the crop at each prompt
point (curate.amg.stand_in): smooth regions, a few hundred survivors on a natural photo, as a
trained SAM gives, so both generators do the work such masks cause. ``--masks noise`` scales the
random decoder's hypernetwork output and biases its IoU head (make_confident): every candidate passes
the filters as pixel noise, the worst case for our statistics kernel and a case that inflates the
reference's time (it run-length encodes noise). Timings depend on how many masks survive, which this
run reports. For each model and image size it
prints: encoder-only time for the image's 5 crops (the floor), the reference generator (float32; the
references have no half-precision path), ours in float32 and bf16, images/s of ours over a batch, and
ratios reference/ours. --parity compares our float32 masks with the reference's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.amg import AmgParams, BatchedMaskGenerator  # noqa: E402
from curate.amg.build import build_efficientvit_sam, build_sam  # noqa: E402
from curate.amg.graphs import warm_up  # noqa: E402
from curate.amg.stand_in import make_segmenting  # noqa: E402
from curate.testing.parity import compare, reference_arrays  # noqa: E402
from curate.testing.tiny_sam import make_confident, tiny_efficientvit_sam, tiny_sam  # noqa: E402

TABLE10 = dict(points_per_side=24, points_per_batch=128, crop_n_layers=1, crop_n_points_downscale_factor=1,
               pred_iou_thresh=0.6, stability_score_thresh=0.85, min_mask_region_area=0)


def test_image(width: int, height: int) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.LANCZOS))


def build(name: str, seed: int):
    torch.manual_seed(seed)
    family, variant = name.split(":")
    if family == "tiny":  # the realistic masks need a 256-channel embedding
        return tiny_efficientvit_sam(seed) if variant == "evit" else tiny_sam(seed)
    return build_sam(variant) if family == "sam" else build_efficientvit_sam(variant)


def reference_generator(name: str, model, settings: dict):
    if "evit" in name:
        from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator as Ref
    else:
        from segment_anything import SamAutomaticMaskGenerator as Ref
    return Ref(model.net, output_mode="binary_mask", **settings)


def timed(fn, device: str, repeats: int = 1):
    """Best of ``repeats`` wall times (seconds), synchronising the device."""
    best, out = float("inf"), None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def encoder_graph(model, batch: torch.Tensor):
    """The encoder on ``batch`` captured as a CUDA graph: returns its replay (no input or output
    copies, unlike the generator's GraphedEncoder: the floor is the encoder's work alone)."""
    warm_up(lambda: model.encode(batch))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.encode(batch)
    return graph.replay


def run(args) -> list[dict]:
    device = args.device
    rows = []
    for name in args.models.split(","):
        model = build(name, args.seed)
        if args.masks == "realistic":
            make_segmenting(model)
        else:
            make_confident(model, args.sharpen, args.iou_bias)
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            image = test_image(width, height)
            settings = dict(TABLE10, points_per_side=args.points_per_side or TABLE10["points_per_side"])
            if args.nms_off:
                settings.update(box_nms_thresh=1.0, crop_nms_thresh=1.0)
            params = AmgParams(**settings, decode_batch=args.decode_batch)
            params16 = AmgParams(**settings, decode_batch=args.decode_batch, compile_decoder=args.compile)
            row = {"model": name, "size": size, "device": device, "masks": args.masks, "settings": settings}

            model.to(device, torch.float32)
            ours32 = BatchedMaskGenerator(model, params, return_masks=args.parity)
            timed(lambda: ours32.generate([image]), device)  # warm-up (cuDNN/cuBLAS autotuning)
            row["ours_fp32_s"], [out32] = timed(lambda: ours32.generate([image]), device, args.repeats)
            row["masks_ours_fp32"] = int(len(out32.areas))
            crops = [ours32.model.preprocess(image[c.box[1]:c.box[3], c.box[0]:c.box[2]])
                     for c in ours32._crops([image])]
            batch = torch.stack(crops).to(device)  # the floor is the encoder's compute alone, no copy
            with torch.inference_mode():
                row["encoder_fp32_s"], _ = timed(lambda: model.encode(batch), device, args.repeats)

            if not args.skip_reference:
                ref = reference_generator(name, model, settings)
                try:
                    row["reference_fp32_s"], anns = timed(lambda: ref.generate(image), device)
                    row["masks_reference"] = len(anns)
                except IndexError as e:  # the references fail when no mask survives
                    row["reference_error"] = f"IndexError: {e}"
                    anns = None
                if args.parity and anns is not None:
                    report = compare(*reference_arrays(anns), out32.masks, out32.boxes)
                    row["parity"] = {**report.__dict__, "ok": report.ok}
                del ref
            del out32

            if device == "cuda":
                model.to(device, torch.bfloat16)
                ours16 = BatchedMaskGenerator(model, params16)
                timed(lambda: ours16.generate([image]), device)
                row["ours_bf16_s"], [out16] = timed(lambda: ours16.generate([image]), device, args.repeats)
                if params16.cuda_graphs and not params16.compile_decoder:  # what the graphs save
                    eager16 = BatchedMaskGenerator(model, replace(params16, cuda_graphs=False))
                    timed(lambda: eager16.generate([image]), device)
                    row["ours_bf16_eager_decoder_s"], _ = timed(lambda: eager16.generate([image]), device,
                                                                args.repeats)
                    del eager16
                phases = BatchedMaskGenerator(model, params16, profile=True)
                phases._decode = ours16._decode  # the decoder as ours16 runs it (compiled or graphed), already warm
                phases._encode_batch = ours16._encode_batch  # likewise the encoder (graphed: captured already)
                phases.generate([image])
                row["ours_bf16_phases_s"] = phases.timings
                if args.profile_ops:
                    from torch.profiler import ProfilerActivity, profile

                    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                        ours16.generate([image])
                    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15), flush=True)
                row["masks_ours_bf16"] = int(len(out16.areas))
                half = batch.to(torch.bfloat16)
                halves = half.repeat(args.batch_images, 1, 1, 1)  # the crops of a batch of images
                with torch.inference_mode():
                    row["encoder_bf16_s"], _ = timed(lambda: model.encode(half), device, args.repeats)
                    if model.graphable_encoder:
                        replay = encoder_graph(model, half)
                        row["encoder_bf16_graphed_s"], _ = timed(replay, device, args.repeats)
                    seconds, _ = timed(lambda: model.encode(halves), device, args.repeats)
                    row["encoder_bf16_batch_per_image_s"] = seconds / args.batch_images
                images = [image] * args.batch_images
                ours16.generate(images)  # warm-up: a compiled decoder meets the batch's shapes here
                seconds, _ = timed(lambda: ours16.generate(images), device, args.repeats)
                row["ours_bf16_images_per_s"] = args.batch_images / seconds
                # against the encoder alone: one image, and per image within a batch of images
                row["ours_over_encoder_bf16"] = row["ours_bf16_s"] / row["encoder_bf16_s"]
                # against the encoder replayed as a CUDA graph (as ours runs it): its GPU time, not
                # the host's time to launch its kernels
                if "encoder_bf16_graphed_s" in row:
                    row["ours_over_graphed_encoder_bf16"] = row["ours_bf16_s"] / row["encoder_bf16_graphed_s"]
                per_image = seconds / args.batch_images
                row["batch_ours_over_encoder_bf16"] = per_image / row["encoder_bf16_batch_per_image_s"]
                row["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
                torch.cuda.reset_peak_memory_stats()
            if "reference_fp32_s" in row:
                row["speedup_fp32"] = row["reference_fp32_s"] / row["ours_fp32_s"]
                if "ours_bf16_s" in row:
                    row["speedup_bf16"] = row["reference_fp32_s"] / row["ours_bf16_s"]
            print(json.dumps(row), flush=True)
            rows.append(row)
        model = None  # frees the weights before the next model is built
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="evit:xl1,sam:vit_h", help="comma list of evit:VARIANT / sam:VARIANT")
    ap.add_argument("--tiny", action="store_true", help="use the tiny random SAM (CPU smoke test)")
    ap.add_argument("--sizes", default="1024x1024,2048x1536,3840x2160")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--points-per-side", type=int, default=0, help="override Table 10's 24 (0 keeps it)")
    ap.add_argument("--decode-batch", type=int, default=576)
    ap.add_argument("--batch-images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nms-off", action="store_true",
                    help="no NMS (thresholds 1.0): every mask passing the filters survives (hundreds with random "
                         "weights, as real SAM keeps on natural images)")
    ap.add_argument("--compile", action="store_true", help="bf16 runs with the torch.compile'd decoder")
    ap.add_argument("--masks", choices=["realistic", "noise"], default="realistic",
                    help="realistic: smooth masks from a classical segmentation (headline); noise: make_confident")
    ap.add_argument("--sharpen", type=float, default=300.0)
    ap.add_argument("--iou-bias", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parity", action="store_true", help="compare our fp32 masks with the reference's")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--profile-ops", action="store_true", help="print the top CUDA ops of one bf16 run")
    ap.add_argument("--out", default="", help="write the rows as JSON here")
    args = ap.parse_args()
    if args.tiny:
        args.models = "tiny:evit" if args.masks == "realistic" else "tiny:sam"
    rows = run(args)
    meta = {"torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print(json.dumps(meta))
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
