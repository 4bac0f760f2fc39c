"""Corpus report from index.parquet and manifest.json only (no image is read).

Writes OUT/stats/report.md, stats.json and PNG plots; returns the numbers as a dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from curate.io.layout import OutputLayout
from curate.io.manifest import read_manifest

# PS3 Table 9: (source, bucket) -> (boxes per image, average box w, h). Documents give no box size.
PS3_TABLE9 = {
    ("DataComp", "1K-2K"): (3.0, 424, 438),
    ("DataComp", "2K-4K"): (4.0, 562, 578),
    ("SA-1B", "2K-4K"): (4.0, 302, 312),
    ("Documents", "all"): (4.0, None, None),
}
BUCKETS = [("<1K", 0, 1000), ("1K-2K", 1000, 2000), ("2K-4K", 2000, 4000), (">4K", 4000, 10**9)]


def bucket_of(long_side: int) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= long_side < hi:
            return name
    return ">4K"


def corpus_stats(out_dir: str | Path) -> dict:
    layout = OutputLayout(Path(out_dir))
    manifest = read_manifest(layout)
    if manifest is None or not layout.index.exists():
        raise FileNotFoundError(f"{out_dir}: no manifest.json/index.parquet; is this a finished curate output?")
    index = pq.read_table(layout.index).to_pylist()
    by_bucket: dict[str, dict] = {}
    for row in index:
        b = by_bucket.setdefault(f"{row['kind']} {bucket_of(max(row['width'], row['height']))}",
                                 {"images": 0, "boxes": 0, "w": [], "h": []})
        b["images"] += 1
        b["boxes"] += row["n_regions"]
        b["w"] += row["box_widths"]
        b["h"] += row["box_heights"]
    buckets = {
        name: {"images": b["images"], "boxes": b["boxes"], "boxes_per_image": b["boxes"] / b["images"],
               "avg_box_w": float(np.mean(b["w"])) if b["w"] else None,
               "avg_box_h": float(np.mean(b["h"])) if b["h"] else None}
        for name, b in sorted(by_bucket.items())
    }
    per_dataset: dict[str, int] = {}
    for row in index:
        per_dataset[row["dataset"]] = per_dataset.get(row["dataset"], 0) + 1
    reasons: dict[str, int] = {}
    for q in manifest.quarantine:
        reasons[q.reason.value] = reasons.get(q.reason.value, 0) + 1
    return {
        "name": manifest.name,
        "status": manifest.status,
        "counts": manifest.counts.model_dump(),
        "per_dataset": per_dataset,
        "buckets": buckets,
        "quarantine_reasons": reasons,
        "stages": {k: v.model_dump() for k, v in manifest.stages.items()},
        "wall_seconds": manifest.wall_seconds,
        "_index": index,
    }


def _plots(stats: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = stats["_index"]
    made = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].hist([max(r["width"], r["height"]) for r in index] or [0], bins=20, color="#4c72b0")
    axes[0].set(title="image long side (px)", ylabel="images")
    counts = [r["n_regions"] for r in index]
    axes[1].hist(counts or [0], bins=np.arange(0, max(counts or [0]) + 2) - 0.5, color="#55a868")
    axes[1].set(title="boxes per image")
    sides = [np.sqrt(w * h) for r in index for w, h in zip(r["box_widths"], r["box_heights"])]
    axes[2].hist(sides or [0], bins=20, color="#c44e52")
    axes[2].set(title="box size sqrt(w*h) (px)")
    fig.tight_layout()
    fig.savefig(folder / "distributions.png", dpi=100)
    plt.close(fig)
    made.append("distributions.png")
    return made


def write_report(out_dir: str | Path) -> Path:
    stats = corpus_stats(out_dir)
    folder = OutputLayout(Path(out_dir)).stats_dir
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(stats, folder)
    public = {k: v for k, v in stats.items() if not k.startswith("_")}
    (folder / "stats.json").write_text(json.dumps(public, indent=2))
    c = stats["counts"]
    lines = [
        f"# Corpus report: {stats['name']} ({stats['status']})", "",
        f"read {c['read']} = written {c['written']} + quarantined {c['quarantined']}; "
        f"{c['regions']} regions, {c['captioned_regions']} captioned; wall {stats['wall_seconds']:.1f} s", "",
        "## Boxes by kind and resolution (long side), beside PS3 Table 9", "",
        "| kind / bucket | images | boxes | boxes/img | avg box (w x h px) |", "|---|---|---|---|---|",
    ]
    for name, b in stats["buckets"].items():
        size = f"{b['avg_box_w']:.0f} x {b['avg_box_h']:.0f}" if b["avg_box_w"] is not None else "-"
        lines.append(f"| {name} | {b['images']} | {b['boxes']} | {b['boxes_per_image']:.2f} | {size} |")
    for (src, bucket), (bpi, w, h) in PS3_TABLE9.items():
        size = f"{w} x {h}" if w else "-"
        lines.append(f"| PS3 {src} {bucket} | | | {bpi:.0f} | {size} |")
    lines += ["", "## Stages", "", "| stage | rows | seconds | rows/s | outcomes | skipped |", "|---|---|---|---|---|---|"]
    for name, s in stats["stages"].items():
        rate = f"{s['rows'] / s['seconds']:.2f}" if s["seconds"] else "-"
        outcomes = ", ".join(f"{k}={v}" for k, v in sorted(s["counts"].items())) or "-"
        lines.append(f"| {name} | {s['rows']} | {s['seconds']:.2f} | {rate} | {outcomes} | {s['skipped'] or ''} |")
    lines += ["", "## Quarantine", ""]
    lines += [f"- {reason}: {n}" for reason, n in sorted(stats["quarantine_reasons"].items())] or ["- none"]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    report = folder / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
