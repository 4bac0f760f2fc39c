"""What the canvas driver lists into the Ray plan per VQA item, for a parquet table that holds its
images (HF datasets' Image structs), in this checkout and in an earlier revision, same table.

    python benchmarks/canvas_listing.py --items 2000 --before 7bb6983 --workdir /tmp/canvas-listing

The listing is the driver's whole share of a canvas run's input: every byte of it goes from the
driver into the plan. Prints bytes per item, seconds and the listing process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(repo: Path, table: Path) -> dict:
    """In this process: list ``table`` with ``repo``'s code."""
    sys.path.insert(0, str(repo))
    from curate.augment.config import VqaSourceConfig
    from curate.augment.run import vqa_batches

    start = time.perf_counter()
    items = listed = 0
    for batch in vqa_batches(VqaSourceConfig(format="table", path=str(table), id_column="id")):
        items += batch.num_rows
        listed += batch.nbytes
    return {"items": items, "listed_bytes_per_item": round(listed / max(items, 1)),
            "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--before", default="7bb6983", help="the revision to compare with")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/canvas-listing"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(measure(args.repo, args.probe)))
        return
    sys.path.insert(0, str(REPO))
    from curate.samples import generate_vqa_samples

    work = args.workdir
    table = work / "vqa" / "vqa.parquet"
    if not table.exists():
        generate_vqa_samples(work / "vqa", count=args.items)
    before = work / "before"
    if not before.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before], check=True)
    results = {"table_bytes": table.stat().st_size, "before_revision": args.before}
    for name, repo in (("before", before), ("after", REPO)):
        out = subprocess.run([sys.executable, __file__, "--probe", str(table), "--repo", str(repo)],
                             capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    results["table_bytes_per_item"] = round(results["table_bytes"] / max(results["after"]["items"], 1))
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
