"""curate.train throughput: a SigLIP-so400m-sized PS3 encoder (random init) training on curate shards.

    python benchmarks/train.py --shards 'bench_data/corpus/shards/*.tar' --vision so400m --steps 30
    python benchmarks/train.py --shards ... --vision so400m --low-res 378 --hi-res 3780 \
        --hi-scales 0.2 0.4 1.0 --hires-selection-side 1512            # PS3-4K shapes, selection on
    python benchmarks/train.py --shards 'out/local/shards/*.tar' --vision tiny --low-res 64 --hi-res 256 \
        --select-k 16 --steps 10 --text minilm                       # CPU smoke test

Reports images/s (each image carries its captioned regions) over the steps after warm-up, and peak GPU
memory. The text tower is frozen and cached, so 'random' (MiniLM shapes) costs what MiniLM would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.train.config import TrainConfig  # noqa: E402
from curate.train.loop import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--vision", default="so400m")
    parser.add_argument("--low-res", type=int, default=384)
    parser.add_argument("--hi-res", type=int, default=1512)
    parser.add_argument("--select-k", type=int, default=256)
    parser.add_argument("--regions", type=int, default=1, help="captioned regions per image per step (PS3: 1)")
    parser.add_argument("--hi-scales", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--hires-selection-side", type=int, default=0, help="light-weight high-res selection "
                                                                           "encoder input side (0: off)")
    parser.add_argument("--context", default="kv_cache", choices=["kv_cache", "tokens", "none"])
    parser.add_argument("--scheme", default="ps3", choices=["ps3", "uhd"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup-logs", type=int, default=5, help="log rows (steps) excluded from the mean")
    parser.add_argument("--text", default="random", help="'random' (MiniLM shapes, random weights), 'minilm' "
                                                          "or a checkpoint directory")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers (decode + resize)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        if args.text == "random":
            from curate.testing.random_models import save_random_minilm

            args.text = str(save_random_minilm(Path(out) / "random-minilm"))
        cfg = TrainConfig.model_validate({
            "data": {"shards": [args.shards], "max_regions": args.regions, "resampled": args.workers > 0,
                     "num_workers": args.workers},
            "model": {"vision": args.vision, "low_res": args.low_res, "hi_res": args.hi_res,
                      "hi_scales": args.hi_scales, "select_k": args.select_k,
                      "hires_selection_side": args.hires_selection_side, "low_res_context": args.context,
                      "scheme": args.scheme, "embed_dim": 512 if args.vision != "tiny" else 64,
                      "text": args.text},
            "optim": {"steps": args.steps, "batch_size": args.batch_size, "warmup_steps": 5},
            "out": out, "log_every": 1, "save_every": 10**9, "resume": False})
        logs = train(cfg, on_log=lambda r: print(json.dumps(r), flush=True))
    measured = logs[args.warmup_logs:] or logs
    result = {
        "hardware": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "vision": args.vision, "low_res": args.low_res, "hi_res": args.hi_res, "select_k": args.select_k,
        "hi_scales": cfg.model.hi_scales, "context": args.context, "scheme": args.scheme,
        "hires_selection_side": args.hires_selection_side, "batch_size": args.batch_size, "steps": args.steps,
        "images_per_s": round(statistics.mean(r["samples_per_s"] for r in measured), 3),
        "peak_gpu_gib": max((r.get("gpu_mem_gib", 0) for r in logs), default=None),
        "loss_first": logs[0]["total"], "loss_last": logs[-1]["total"],
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
