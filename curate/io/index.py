"""Per-shard commit records ("parts") and the run's index.parquet.

A part holds one row per input handled in that shard: written samples and quarantined inputs alike,
so the parts alone tell which inputs are done (resume) and add up the counts.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.io.fs import read_local_parquet
from curate.io.layout import OutputLayout, atomic_write_bytes

PART_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("dataset", pa.string()),
        ("status", pa.string()),  # "written" | "quarantined"
        ("key", pa.string()),
        ("shard", pa.string()),  # shard file name, null when quarantined
        ("image_member", pa.string()),
        ("image_offset", pa.int64()),
        ("image_size", pa.int64()),
        ("json_offset", pa.int64()),
        ("json_size", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("kind", pa.string()),
        ("n_regions", pa.int32()),
        ("n_captioned", pa.int32()),
        ("box_widths", pa.list_(pa.int32())),
        ("box_heights", pa.list_(pa.int32())),
        ("caption_words", pa.list_(pa.int32())),  # per captioned region
        ("caption_sources", pa.list_(pa.string())),  # per captioned region: mllm | ocr
        ("question_words", pa.list_(pa.int32())),  # per region with a retargeted question
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("timings", pa.string()),  # JSON {stage: seconds}
        ("events", pa.string()),  # JSON {"stage.outcome": count}
    ]
)

INDEX_COLUMNS = [
    "key", "shard", "image_member", "image_offset", "image_size", "json_offset", "json_size",
    "width", "height", "kind", "n_regions", "n_captioned", "box_widths", "box_heights", "caption_words",
    "caption_sources", "question_words", "dataset", "uri",
]


QUARANTINE_COLUMNS = ["uri", "dataset", "reason", "detail"]


def read_parts(layout: OutputLayout, schema: pa.Schema = PART_SCHEMA) -> pa.Table:
    files = layout.part_files()
    if not files:
        return schema.empty_table()
    return pa.concat_tables([read_local_parquet(p, schema=schema) for p in files])


def _write_table(path: Path, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())


def write_index(layout: OutputLayout, parts: pa.Table, columns: list[str] | None = INDEX_COLUMNS) -> int:
    """index.parquet: one row per written sample (``columns`` of the parts, all when None), ordered by
    shard then position."""
    written = parts.filter(pc.equal(parts["status"], "written"))
    if columns is not None:
        written = written.select(columns)
    _write_table(layout.index, written)
    return written.num_rows


def write_quarantine(layout: OutputLayout, parts: pa.Table) -> int:
    """quarantine.parquet: every quarantined input with its reason and detail, in commit order."""
    quarantined = parts.filter(pc.equal(parts["status"], "quarantined"))
    _write_table(layout.quarantine, quarantined.select([c for c in QUARANTINE_COLUMNS if c in parts.column_names]))
    return quarantined.num_rows
