"""`curate stats` at scale: a synthetic index of N rows (default 1M) and its manifest, then the report.

    python benchmarks/stats_scale.py --rows 1000000

Reports the seconds to compute the statistics and write report.md/html/json and plots (no gallery:
the synthetic corpus has no shards). The reference point is the issue's budget: under a minute on
the 2-core development machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.io.index import INDEX_COLUMNS, PART_SCHEMA  # noqa: E402
from curate.io.layout import OutputLayout  # noqa: E402
from curate.records import Counts, Manifest, StageStats  # noqa: E402
from curate.stats.report import write_report  # noqa: E402


def synthetic_index(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    width = rng.integers(1000, 4200, rows)
    height = (width / rng.uniform(0.6, 1.8, rows)).astype(np.int64)
    n_regions = rng.integers(0, 5, rows)
    offsets = np.concatenate([[0], np.cumsum(n_regions)]).astype(np.int32)
    total = int(offsets[-1])
    kind = np.where(rng.random(rows) < 0.3, "document", "natural")

    def lists(values, typ):
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=typ))

    columns = {
        "key": pa.array([f"{i:020x}" for i in range(rows)]),
        "shard": pa.array([f"train-{i // 1000:06d}.tar" for i in range(rows)]),
        "image_member": pa.array([f"{i:020x}.jpg" for i in range(rows)]),
        "image_offset": pa.array(np.zeros(rows, np.int64)), "image_size": pa.array(np.full(rows, 1000, np.int64)),
        "json_offset": pa.array(np.zeros(rows, np.int64)), "json_size": pa.array(np.full(rows, 500, np.int64)),
        "width": pa.array(width.astype(np.int32)), "height": pa.array(height.astype(np.int32)),
        "kind": pa.array(kind), "n_regions": pa.array(n_regions.astype(np.int32)),
        "n_captioned": pa.array(n_regions.astype(np.int32)),
        "box_widths": lists(rng.integers(64, 900, total).astype(np.int32), pa.int32()),
        "box_heights": lists(rng.integers(64, 900, total).astype(np.int32), pa.int32()),
        "caption_words": lists(rng.integers(3, 120, total).astype(np.int32), pa.int32()),
        "caption_sources": lists(np.where(rng.random(total) < 0.3, "ocr", "mllm"), pa.string()),
        "dataset": pa.array(np.where(kind == "document", "pdfa", "datacomp")),
        "uri": pa.array([f"s3://bucket/{i}.jpg" for i in range(rows)]),
    }
    schema = pa.schema([PART_SCHEMA.field(name) for name in INDEX_COLUMNS])
    return pa.table([columns[name] for name in INDEX_COLUMNS], schema=schema)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        layout = OutputLayout(Path(tmp))
        start = time.perf_counter()
        table = synthetic_index(args.rows)
        pq.write_table(table, layout.index)
        manifest = Manifest(name="synthetic", config={}, config_sha256="0" * 64, curate_version="bench",
                            versions={}, status="complete", started_at="-", counts=Counts(read=args.rows,
                            written=args.rows, regions=int(pa.compute.sum(table["n_regions"]).as_py())),
                            stages={"regions": StageStats(rows=args.rows, seconds=args.rows * 0.5)},
                            shards=[], quarantine=[])
        layout.manifest.write_text(manifest.model_dump_json())
        made = time.perf_counter() - start
        start = time.perf_counter()
        write_report(tmp, gallery=0)
        seconds = time.perf_counter() - start
    print(f"rows={args.rows} boxes={manifest.counts.regions} synthetic_index_s={made:.1f} report_s={seconds:.1f} "
          f"(budget 60 s: {seconds / 60:.2f} of it)")


if __name__ == "__main__":
    main()
