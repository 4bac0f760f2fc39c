"""`curate run pipelines/ps3.yaml` end to end on a GPU machine: Ray Data, the mask stage as a GPU actor.

    python benchmarks/ps3_pipeline.py --workdir /tmp/ps3 --count 16     # GPU machine with Ray installed

Generates the offline sample set (rendered pages and scikit-image photos, 1K-4K), saves a random
EfficientViT-SAM-XL1 made confident as the checkpoint the config points at (no real checkpoint can be
downloaded here: timings are real, boxes are not meaningful), and runs the CLI exactly as a user does on
pipelines/ps3.yaml with only the stages that need MLLM/LLM weights switched off (none can be had here;
document OCR is optional with --ocr). Then runs the same command again, which must resume with nothing to do, and
checks the manifest's counts (read = written + quarantined) and the index. Writes ps3_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.amg.build import build_efficientvit_sam  # noqa: E402
from curate.io.layout import OutputLayout  # noqa: E402
from curate.io.manifest import read_manifest  # noqa: E402
from curate.samples import generate_samples  # noqa: E402
from curate.testing.tiny_sam import make_confident  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "curate.cli", *args], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
    if proc.returncode != 0:
        raise SystemExit(f"curate {' '.join(args)} exited {proc.returncode}")
    return seconds, proc.stdout


def without_language_models(path: Path, ocr: bool) -> Path:
    """pipelines/ps3.yaml with the caption and retarget stages that need MLLM/LLM weights switched
    off (recorded as skipped in the manifest); everything else, masks included, unchanged."""
    cfg = yaml.safe_load((REPO / "pipelines" / "ps3.yaml").read_text())
    cfg["caption"]["natural"] = {"backend": "none", "reason": "no MLLM weights on this machine"}
    if not ocr:
        cfg["caption"]["document"] = {"backend": "none", "reason": "rapidocr is not installed on this machine"}
    cfg["retarget"] = {"backend": "none"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=16, help="sample images (half pages, half photos)")
    parser.add_argument("--model", default="xl1")
    parser.add_argument("--ocr", action="store_true", help="caption documents with RapidOCR (needs rapidocr)")
    parser.add_argument("--result", type=Path, help="where to write the JSON summary (default: WORKDIR)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="extra config override, e.g. masks.natural.points_per_side=4 for a CPU smoke run")
    args = parser.parse_args()
    images, out = args.workdir / "images", args.workdir / "out"
    args.workdir.mkdir(parents=True, exist_ok=True)
    generate_samples(images, count=args.count)
    checkpoint = args.workdir / f"random_confident_evit_{args.model}.pt"
    torch.manual_seed(0)
    torch.save(make_confident(build_efficientvit_sam(args.model)).net.state_dict(), checkpoint)
    pipeline = without_language_models(args.workdir / "ps3.yaml", args.ocr)
    command = ["run", str(pipeline), "-i", str(images), "-o", str(out),
               "--set", f"masks.natural.checkpoint={checkpoint}", "--set", f"masks.natural.model={args.model}",
               "--set", "ingest.min_side=256"]
    for override in args.overrides:
        command += ["--set", override]
    first_s, _ = run_cli(command)
    manifest = read_manifest(OutputLayout(out))
    resume_s, resume_out = run_cli(command)
    again = read_manifest(OutputLayout(out))
    c = manifest.counts
    index_rows = pq.read_metadata(OutputLayout(out).index).num_rows
    result = {
        "hardware": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "command": "curate " + " ".join(command),
        "images": args.count, "first_run_s": round(first_s, 1), "resume_run_s": round(resume_s, 1),
        "counts": c.model_dump(), "counts_add_up": c.read == c.written + c.quarantined,
        "index_rows": index_rows, "shards": len(manifest.shards),
        "resume_wrote_nothing_new": again.counts.written == c.written and len(again.shards) == len(manifest.shards),
        "stages": {k: v.model_dump() for k, v in manifest.stages.items()},
    }
    (args.result or args.workdir / "ps3_pipeline.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}, indent=1))
    if not (result["counts_add_up"] and result["resume_wrote_nothing_new"] and index_rows == c.written):
        raise SystemExit("counts do not add up, or the resumed run wrote again")


if __name__ == "__main__":
    main()
