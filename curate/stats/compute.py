"""Corpus statistics from index.parquet and manifest.json only (no image is opened).

Columns are read with pyarrow and reduced with vectorised numpy, so 1M rows take seconds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.io.layout import OutputLayout
from curate.io.manifest import read_manifest
from curate.io.objpath import OutputPath, read_parquet, read_parquet_schema
from curate.records import Manifest
from curate.stats.models import (
    BucketRow,
    CaptionStats,
    CorpusStats,
    Histogram,
    QuestionStats,
    SourceRow,
    StageRow,
    Table9Row,
)

BUCKETS = [("<1K", 0, 1000), ("1K-2K", 1000, 2000), ("2K-4K", 2000, 4000), (">4K", 4000, np.inf)]

PS3_TABLE9 = [
    Table9Row(source="DataComp", kind="natural", bucket="1K-2K", images_m=18, boxes_m=54, boxes_per_image=3.0,
              avg_box_size="424x438"),
    Table9Row(source="DataComp", kind="natural", bucket="2K-4K", images_m=9, boxes_m=36, boxes_per_image=4.0,
              avg_box_size="562x578"),
    Table9Row(source="SA-1B", kind="natural", bucket="2K-4K", images_m=11, boxes_m=44, boxes_per_image=4.0,
              avg_box_size="302x312"),
    Table9Row(source="IDL", kind="document", bucket="1K-2K", images_m=12, boxes_m=48, boxes_per_image=4.0,
              avg_box_size="28x286"),
    Table9Row(source="IDL", kind="document", bucket="2K-4K", images_m=7, boxes_m=28, boxes_per_image=4.0,
              avg_box_size="30x330"),
    Table9Row(source="PDFA", kind="document", bucket="1K-2K", images_m=12, boxes_m=48, boxes_per_image=4.0,
              avg_box_size="80x461"),
    Table9Row(source="PDFA", kind="document", bucket="2K-4K", images_m=6, boxes_m=24, boxes_per_image=4.0,
              avg_box_size="84x569"),
]

INDEX_STATS_COLUMNS = ["width", "height", "kind", "dataset", "n_regions", "n_captioned", "box_widths",
                       "box_heights", "caption_words", "caption_sources", "question_words", "global_caption_words"]


def bucket_names(long_side: np.ndarray) -> np.ndarray:
    out = np.empty(long_side.shape, dtype=object)
    for name, lo, hi in BUCKETS:
        out[(long_side >= lo) & (long_side < hi)] = name
    return out


def histogram(values: np.ndarray, bins, unit: str = "") -> Histogram:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return Histogram(edges=[], counts=[], unit=unit)
    counts, edges = np.histogram(values, bins=bins)
    return Histogram(edges=[float(e) for e in edges], counts=[int(c) for c in counts], unit=unit)


def _flat(table: pa.Table, column: str) -> np.ndarray:
    return pc.list_flatten(table[column]).to_numpy(zero_copy_only=False)


def _per_box(table: pa.Table, values: np.ndarray) -> np.ndarray:
    """Repeat a per-image value once per box of that image."""
    return np.repeat(values, table["n_regions"].to_numpy(zero_copy_only=False))


def read_index(layout: OutputLayout) -> pa.Table:
    names = set(read_parquet_schema(layout.index).names)
    table = read_parquet(layout.index, columns=[c for c in INDEX_STATS_COLUMNS if c in names])
    if "question_words" not in names:  # outputs written before questions existed
        table = table.append_column("question_words", pa.array([[]] * table.num_rows, pa.list_(pa.int32())))
    if "global_caption_words" not in names:  # outputs written before global captions were counted
        table = table.append_column("global_caption_words", pa.nulls(table.num_rows, pa.int32()))
    return table


def compute_stats(out_dir: str | OutputPath) -> tuple[CorpusStats, pa.Table]:
    layout = OutputLayout.at(out_dir)
    manifest = read_manifest(layout)
    if manifest is None or not layout.index.exists():
        raise FileNotFoundError(f"{out_dir}: no manifest.json/index.parquet; is this a curate output?")
    table = read_index(layout)
    width = table["width"].to_numpy(zero_copy_only=False).astype(np.float64)
    height = table["height"].to_numpy(zero_copy_only=False).astype(np.float64)
    kind = np.asarray(table["kind"].to_pylist(), dtype=object)
    n_regions = table["n_regions"].to_numpy(zero_copy_only=False)
    long_side = np.maximum(width, height)
    buckets = bucket_names(long_side)
    box_w, box_h = _flat(table, "box_widths").astype(np.float64), _flat(table, "box_heights").astype(np.float64)
    box_bucket, box_kind = _per_box(table, buckets), _per_box(table, kind)
    box_area_frac = box_w * box_h / _per_box(table, width * height)

    bucket_rows = []
    for k in sorted(set(kind)):
        for name, _, _ in BUCKETS:
            images = (kind == k) & (buckets == name)
            if not images.any():
                continue
            boxes = (box_kind == k) & (box_bucket == name)
            bucket_rows.append(BucketRow(
                kind=k, bucket=name, images=int(images.sum()), boxes=int(n_regions[images].sum()),
                boxes_per_image=float(n_regions[images].mean()),
                avg_box_w=float(box_w[boxes].mean()) if boxes.any() else None,
                avg_box_h=float(box_h[boxes].mean()) if boxes.any() else None,
            ))

    grouped = table.group_by(["dataset", "kind"]).aggregate(
        [("width", "count"), ("n_regions", "sum"), ("n_captioned", "sum")]).to_pylist()
    per_source = [SourceRow(dataset=g["dataset"], kind=g["kind"], images=g["width_count"],
                            boxes=g["n_regions_sum"] or 0, captioned=g["n_captioned_sum"] or 0)
                  for g in sorted(grouped, key=lambda g: (g["dataset"], g["kind"]))]

    words = _flat(table, "caption_words")
    sources = _flat(table, "caption_sources")
    names, counts = np.unique(sources.astype(str), return_counts=True) if sources.size else ([], [])
    aspect = np.maximum(width, height) / np.maximum(np.minimum(width, height), 1)
    histograms = {
        "image_long_side": histogram(long_side, 30, "px"),
        "aspect_ratio": histogram(aspect, 30, "long/short"),
        "boxes_per_image": histogram(n_regions, np.arange(0, max(int(n_regions.max(initial=0)), 4) + 2) - 0.5, "boxes"),
        "box_size": histogram(np.sqrt(box_w * box_h), 30, "sqrt(w*h) px"),
        "box_area_fraction": histogram(box_area_frac, 30, "box area / image area"),
        "caption_words": histogram(words, 30, "words"),
    }
    question_words = _flat(table, "question_words")
    global_words = table["global_caption_words"].drop_null().to_numpy(zero_copy_only=False)
    questions = question_stats(manifest, question_words, len(layout.question_shard_files()))
    if questions is not None:
        histograms["question_words"] = histogram(question_words, 20, "words")
    stats = CorpusStats(
        name=manifest.name, output=str(out_dir), status=manifest.status, wall_seconds=manifest.wall_seconds,
        counts=manifest.counts, per_source=per_source, buckets=bucket_rows, ps3_table9=PS3_TABLE9,
        histograms=histograms,
        captions=CaptionStats(regions=int(n_regions.sum()), captioned=int(words.size),
                              by_source={str(n): int(c) for n, c in zip(names, counts)},
                              words_mean=float(words.mean()) if words.size else None,
                              dropped=caption_drops(manifest),
                              global_captions=int(global_words.size),
                              global_words_mean=float(global_words.mean()) if global_words.size else None),
        questions=questions,
        quarantine_reasons=quarantine_reasons(manifest),
        stages=stage_rows(manifest),
    )
    return stats, table


def question_stats(manifest: Manifest, words: np.ndarray, shards: int) -> QuestionStats | None:
    stage = manifest.stages.get("retarget")
    if stage is None or stage.skipped:
        return None
    return QuestionStats(asked=stage.counts.get("prompts", 0), kept=stage.counts.get("questions", 0),
                         dropped={k.split(".", 1)[1]: v for k, v in sorted(stage.counts.items())
                                  if k.startswith("dropped.")},
                         words_mean=float(words.mean()) if words.size else None, shards=shards)


def caption_drops(manifest: Manifest) -> dict[str, int]:
    caption = manifest.stages.get("caption")
    if caption is None:
        return {}
    return {k: v for k, v in sorted(caption.counts.items()) if k.startswith("dropped.") or k == "skipped"}


def quarantine_reasons(manifest: Manifest) -> dict[str, int]:
    if manifest.quarantine_reasons:
        return dict(sorted(manifest.quarantine_reasons.items()))
    reasons: dict[str, int] = {}  # manifests written before the summary existed
    for q in manifest.quarantine:
        reasons[q.reason.value] = reasons.get(q.reason.value, 0) + 1
    return dict(sorted(reasons.items()))


def stage_rows(manifest: Manifest) -> list[StageRow]:
    total = sum(s.seconds for s in manifest.stages.values()) or None
    return [
        StageRow(stage=name, rows=s.rows, seconds=s.seconds,
                 rows_per_second=s.rows / s.seconds if s.seconds else None,
                 time_share=s.seconds / total if total else None, skipped=s.skipped, rates=s.rates)
        for name, s in manifest.stages.items()
    ]
