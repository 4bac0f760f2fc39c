"""Resume at scale: listing and resume planning over millions of listed inputs, with the driver's
memory sampled from /proc.

    python benchmarks/resume_scale.py --listed 1000000 10000000 --workdir /tmp/curate-resume

For each size N: a list source (parquet) of N synthetic URIs and an interrupted output whose parts
commit all but the last ``--todo`` of them (parts of ``--rows-per-part`` rows, each naming one small
shard, written through the real committer). Then ``curate run`` resumes it: the listing streams into
Ray, the ledger actors are seeded from the parts, every committed input is skipped inside the
workers, the ``--todo`` uncommitted ones are ingested (their files do not exist: they are quarantined
as unreadable, which is real work through the whole plan), and the run finishes (verify, index,
manifest). Reports the driver's peak RSS, the whole process tree's, and the wall time of each phase.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scale import run_sampled  # noqa: E402  (benchmarks/ is not a package)


def uri_of(i: int) -> str:
    return f"/nonexistent/photos/{i // 10000:05d}/img{i:09d}.jpg"


def write_list(path: Path, n: int) -> None:
    if path.exists():
        return
    with pq.ParquetWriter(path, pa.schema([("uri", pa.string())])) as writer:
        for start in range(0, n, 1_000_000):
            uris = [uri_of(i) for i in range(start, min(n, start + 1_000_000))]
            writer.write_table(pa.table({"uri": uris}))


def write_config(workdir: Path, listing: Path, output: Path) -> Path:
    raw = {"name": "resume-scale", "sources": [{"type": "list", "path": str(listing), "kind": "natural"}],
           "masks": {"natural": {"backend": "skimage_felzenszwalb", "work_side": 256}},
           "caption": {"natural": {"backend": "none", "reason": "benchmark"}, "document": {"backend": "none",
                                                                                           "reason": "benchmark"}},
           "output": {"path": str(output), "shard_max_samples": 1000}, "ray": {"progress": False}}
    path = workdir / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def seed_output(config: Path, n: int, todo: int, rows_per_part: int) -> float:
    """An interrupted output that committed inputs 0 .. n - todo - 1 (through the real committer)."""
    from curate.config import load_config
    from curate.io.corpus import CorpusRun
    from curate.io.sources import dataset_name

    cfg = load_config(config)
    dataset = dataset_name(cfg.sources[0])
    t0 = time.perf_counter()
    run = CorpusRun(cfg.output.path, cfg).open()
    committer, layout = run.committer, run.layout
    for start in range(0, n - todo, rows_per_part):
        number = committer.take_number()
        committer.target.begin(number)
        shard = committer.target.shard_writer(layout.shards_dir, number)
        shard.add(f"{number:020x}", {"json": b"{}"})  # a stand-in: the resume reads parts, not shards
        shard.close()
        stop = min(n - todo, start + rows_per_part)
        rows = [{"uri": uri_of(i), "dataset": dataset, "status": "written", "key": f"{i:020x}",
                 "shard": shard.path.name, "width": 1024, "height": 768, "kind": "natural", "n_regions": 0,
                 "n_captioned": 0} for i in range(start, stop)]
        committer.target.commit(number, [shard], rows)
        committer.committed_any = True
    run.interrupted()
    return time.perf_counter() - t0


def resume(config: Path) -> dict:
    sampled = run_sampled(config)
    trace = sampled["trace"]
    return {"seconds": round(sampled["seconds"], 1), "peak_driver_rss_mib": round(sampled["peaks"]["driver"] / 2**20),
            "peak_tree_rss_mib": round(sampled["peaks"]["tree"] / 2**20),
            "driver_rss_mib_trace": trace[:: max(1, len(trace) // 40)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listed", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--todo", type=int, default=2000, help="listed inputs left uncommitted")
    parser.add_argument("--rows-per-part", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/curate-resume"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.listed:
        listing = args.workdir / f"list-{n}.parquet"
        output = args.workdir / f"out-{n}"
        subprocess.run(["rm", "-rf", str(output)], check=True)
        write_list(listing, n)
        config = write_config(args.workdir, listing, output)
        seeded = seed_output(config, n, args.todo, args.rows_per_part)
        print(f"{n} listed: output seeded in {seeded:.0f} s", flush=True)
        measured = resume(config)
        manifest = json.loads((output / "manifest.json").read_text())
        c = manifest["counts"]
        result = {"listed": n, "committed_before": n - args.todo, "todo": args.todo, "seed_seconds": round(seeded),
                  "read": c["read"], "written": c["written"], "quarantined": c["quarantined"],
                  "status": manifest["status"], **measured}
        print(json.dumps({k: v for k, v in result.items() if k != "driver_rss_mib_trace"}), flush=True)
        results.append(result)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
