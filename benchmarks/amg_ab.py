"""Two versions of curate.amg on one machine start: one generate() of XL1 bf16 at 2K, Table 10.

Wall times move with the host by +-20% between machine starts, more than most changes to the
decoder; GPU time does not. Run each version in its own process, alternating, on one start:

    git worktree add /tmp/base <commit>
    for r in 1 2; do
        python benchmarks/amg_ab.py --root /tmp/base --name base_$r --out results/
        python benchmarks/amg_ab.py --root . --name new_$r --out results/
    done

Each run prints and writes: best wall times of generate() and of the encoder alone, launched eagerly
and replayed as a CUDA graph (4 x best of 5, interleaved), the GPU time of one generate() and of
the encoder (sum of kernel times by torch.profiler), the number of kernels, the top kernels, the
GPU's idle time in a profiled generate() (host-side gaps there are inflated by the profiler) and
the phases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def gpu_milliseconds(fn):
    """(sum of CUDA kernel times in ms, kernel count, key averages) of one call of ``fn``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    averages = prof.key_averages()
    total = sum(e.self_device_time_total for e in averages) / 1000
    return total, sum(e.count for e in averages if e.self_device_time_total > 0), averages


def idle_gaps(events) -> tuple[float, list[tuple[float, float]]]:
    """GPU idle milliseconds in a profiled call and the gaps (start, end) in profiler microseconds."""
    import torch

    gpu = sorted((e.time_range.start, e.time_range.end) for e in events
                 if e.device_type == torch.autograd.DeviceType.CUDA)
    host = [e.time_range for e in events if e.device_type != torch.autograd.DeviceType.CUDA]
    start = min(r.start for r in host)
    end = max(max(g[1] for g in gpu), max(r.end for r in host))
    gaps, busy_until = [], start
    for s, e in gpu:
        if s > busy_until:
            gaps.append((busy_until, s))
        busy_until = max(busy_until, e)
    gaps.append((busy_until, end))
    return sum(b - a for a, b in gaps) / 1000, gaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="directory holding the curate package to measure")
    ap.add_argument("--name", required=True, help="label of this run (file name of the result)")
    ap.add_argument("--out", default=".", help="folder for amg_ab_NAME.json")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="an AmgParams field (integer) other than Table 10's, e.g. lead_crops=0; repeatable")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, root)
    import curate
    import curate.amg.generator  # noqa: F401  (this version's package first)
    if not curate.__file__.startswith(root):
        raise SystemExit(f"curate imported from {curate.__file__}, not from {root}")
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.amg import TABLE10, build, encoder_graph, test_image, timed
    from curate.amg import AmgParams, BatchedMaskGenerator
    from curate.testing.tiny_sam import make_confident

    image = test_image(2048, 1536)
    model = make_confident(build("evit:xl1", 0), 300.0, 1.0)
    model.to("cuda", torch.float32)
    extra = {key: int(value) for key, value in (item.split("=", 1) for item in args.param)}
    params = AmgParams(**{**TABLE10, "decode_batch": 576, **extra})
    crops = BatchedMaskGenerator(model, params)._crops([image])
    batch = torch.stack([model.preprocess(image[c.box[1]:c.box[3], c.box[0]:c.box[2]]) for c in crops]).cuda()
    model.to("cuda", torch.bfloat16)
    half = batch.to(torch.bfloat16)
    gen = BatchedMaskGenerator(model, params)
    started = time.perf_counter()
    for _ in range(3):
        out = gen.generate([image])
    torch.cuda.synchronize()
    row = {"name": args.name, "root": root, "params": extra, "warmup_s": time.perf_counter() - started,
           "masks": int(len(out[0].areas))}
    encoder, graphed, ours = [], [], []
    with torch.inference_mode():
        replay = encoder_graph(model, half)
        for _ in range(4):
            encoder.append(timed(lambda: model.encode(half), "cuda", 5)[0])
            graphed.append(timed(replay, "cuda", 5)[0])
            ours.append(timed(lambda: gen.generate([image]), "cuda", 5)[0])
        row["encoder_gpu_ms"] = [gpu_milliseconds(lambda: model.encode(half))[0] for _ in range(2)]
    row.update(encoder_s=encoder, encoder_graphed_s=graphed, ours_s=ours, ratios=[o / e for o, e in zip(ours, encoder)],
               ratio_best=min(ours) / min(encoder), ratio_graphed_best=min(ours) / min(graphed))
    total, count, averages = gpu_milliseconds(lambda: gen.generate([image]))
    row.update(ours_gpu_ms=total, ours_kernels=count, top=[
        (e.key[:60], round(e.self_device_time_total / 1000, 3), e.count)
        for e in sorted(averages, key=lambda e: -e.self_device_time_total)[:25]])
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        gen.generate([image])
        torch.cuda.synchronize()
    row["idle_ms_profiled"], gaps = idle_gaps(prof.events())
    row["largest_gaps_ms"] = sorted(((b - a) / 1000 for a, b in gaps), reverse=True)[:8]
    gen.profile, gen.timings = True, {}
    gen.generate([image])
    row["phases_ms"] = {k: round(v * 1000, 2) for k, v in gen.timings.items()}
    print(json.dumps({k: v for k, v in row.items() if k != "top"}))
    Path(args.out, f"amg_ab_{args.name}.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
