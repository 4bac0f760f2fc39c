"""Where the time of our automatic mask generator goes, on one image (GPU).

    python benchmarks/amg_profile.py --model evit:xl1 --size 2048x1536

Prints: the top CUDA kernels of one bf16 run (torch.profiler); the mask decoder's parts timed
separately (two-way transformer, output upscaling, hypernetwork product) for one decode batch; the
statistics step on that batch's masks by the fused kernel and by the references' arithmetic; and
the share of 32x128 output tiles whose pixels are not all on one side of the mask threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.amg import TABLE10, build, test_image  # noqa: E402
from curate.amg import AmgParams, BatchedMaskGenerator  # noqa: E402
from curate.amg.mask_stats import mask_stats, upscale_logits  # noqa: E402
from curate.testing.tiny_sam import make_confident  # noqa: E402


def cuda_time(fn, repeats: int = 5) -> float:
    """Median seconds of ``fn`` by CUDA events."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return float(np.median(times))


@torch.inference_mode()
def smooth_masks(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """(n, 256, 256) logits of 1-3 discs each with sharp edges (+-30 within a few low-res pixels)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(256.0, device="cuda"), torch.arange(256.0, device="cuda"), indexing="ij")
    out = torch.full((n, 256, 256), -30.0, device="cuda")
    for _ in range(3):
        centre = torch.rand(n, 2, generator=g, device="cuda") * 200 + 28
        radius = torch.rand(n, 1, 1, generator=g, device="cuda") * 40 + 4
        dist = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2).sqrt()
        out = torch.maximum(out, ((radius - dist) * 10).clamp(-30, 30))
    return out.to(dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="evit:xl1")
    ap.add_argument("--size", default="2048x1536")
    ap.add_argument("--decode-batch", type=int, default=576)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--try-compile", action="store_true", help="also time torch.compile of the decoder")
    ap.add_argument("--ncu", action="store_true",
                    help="run one generation between cudaProfilerStart/Stop and stop "
                         "(for ncu --profile-from-start off)")
    args = ap.parse_args()
    width, height = map(int, args.size.split("x"))
    image = test_image(width, height)
    model = make_confident(build(args.model, 0)).to("cuda", torch.bfloat16)
    params = AmgParams(**TABLE10, decode_batch=args.decode_batch)
    generator = BatchedMaskGenerator(model, params)
    generator.generate([image])
    if args.ncu:
        generator.generate([image])
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        generator.generate([image])
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
        return

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        generator.generate([image])
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top), flush=True)

    # one decode batch of the full-image crop, its parts timed on their own
    crops = generator._crops([image])
    embeddings = generator._encode([image], crops, [0])
    ctx = model.decoder_context(embeddings).crop(0)
    crop = crops[0]
    h, w = crop.hw
    n = min(args.decode_batch, len(crop.points))
    coords = torch.as_tensor(crop.points[:n] * (1024 / max(h, w)), dtype=torch.float32, device="cuda")
    row = {"model": args.model, "size": args.size, "prompts": n}
    row["decode_s"] = cuda_time(lambda: model.decode(ctx, coords))
    # the reference decoder (segment_anything's MaskDecoder) on the same prompts and embedding
    dec, pe = model.net.mask_decoder, model.net.prompt_encoder
    labels = torch.ones((n, 1), dtype=torch.int, device="cuda")
    sparse, dense = pe(points=(coords[:, None, :], labels), boxes=None, masks=None)
    image_pe = pe.get_dense_pe().to(model.dtype)

    def reference_decode():
        return dec(image_embeddings=embeddings - pe.no_mask_embed.weight.reshape(1, -1, 1, 1).to(model.dtype),
                   image_pe=image_pe, sparse_prompt_embeddings=sparse.to(model.dtype),
                   dense_prompt_embeddings=dense.to(model.dtype), multimask_output=True)

    row["reference_decode_s"] = cuda_time(reference_decode)
    from curate.amg.decoder import decode_points

    row["decode_unfused_upscale_s"] = cuda_time(
        lambda: decode_points(model.net, model.dtype, ctx, coords, fused_upscale=False))
    if args.try_compile:
        import time

        compiled = torch.compile(decode_points, dynamic=False)
        start = time.perf_counter()
        compiled(model.net, model.dtype, ctx, coords)
        torch.cuda.synchronize()
        row["compile_s"] = time.perf_counter() - start
        row["decode_compiled_s"] = cuda_time(lambda: compiled(model.net, model.dtype, ctx, coords))
    logits, iou = model.decode(ctx, coords)
    low = logits.flatten(0, 1)
    hws = torch.tensor([[h, w]], device="cuda").expand(len(low), 2)
    row["masks"] = len(low)
    row["stats_triton_s"] = cuda_time(lambda: mask_stats(low, hws, 1024, 0.0, 1.0, backend="triton"))
    row["stats_torch_s"] = cuda_time(lambda: mask_stats(low, hws, 1024, 0.0, 1.0, backend="torch"), repeats=2)
    from curate.amg.triton_stats import mask_stats_triton

    # kernel settings: rows and columns per tile, warps, product precision
    settings = [(by, bx, warps, "tf32") for by in (32, 64) for bx in (64, 128) for warps in (4, 8)]
    settings += [(128, 64, 4, "tf32"), (64, 32, 4, "tf32"), (64, 128, 4, "tf32x3"), (64, 64, 4, "tf32x3")]
    row["stats_triton_by_setting_s"] = {
        f"rows{by}_cols{bx}_warps{warps}_{precision}": cuda_time(lambda: mask_stats_triton(
            low, hws, 1024, 0.0, 1.0, block_rows=by, block_cols=bx, num_warps=warps, precision=precision))
        for by, bx, warps, precision in settings}
    # masks as smooth as a trained decoder's (a few sharp blobs each): most tiles are skipped
    smooth = smooth_masks(len(low), low.dtype)
    row["stats_triton_smooth_s"] = cuda_time(lambda: mask_stats(smooth, hws, 1024, 0.0, 1.0, backend="triton"))
    row["stats_torch_smooth_s"] = cuda_time(lambda: mask_stats(smooth, hws, 1024, 0.0, 1.0, backend="torch"),
                                            repeats=2)
    # share of output tiles that are not uniform w.r.t. the mask threshold (a lower bound of the
    # tiles the kernel evaluates pixel by pixel)
    mixed = []
    for i in range(0, len(low), 64):
        full = upscale_logits(low[i:i + 64], (h, w), 1024) > 0
        th, tw = -(-h // 32) * 32, -(-w // 128) * 128
        padded = torch.nn.functional.pad(full.float(), (0, tw - w, 0, th - h), value=0.5)
        tiles = padded.view(len(full), th // 32, 32, tw // 128, 128)
        mixed.append(((tiles.amax(dim=(2, 4)) != tiles.amin(dim=(2, 4))).float().mean()).item())
    row["mixed_tile_share"] = float(np.mean(mixed))
    row["area_share"] = float((mask_stats(low, hws, 1024, 0.0, 1.0)[:, 2].float() / (h * w)).mean())
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
