"""Per-shard commit records ("parts") and the run's index.parquet.

A part holds one row per input handled in that shard: written samples and quarantined inputs alike,
so the parts alone tell which inputs are done (resume) and add up the counts.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.io.layout import OutputLayout, atomic_writer
from curate.io.objpath import OutputPath, open_binary

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
        ("global_caption_words", pa.int32()),  # null: no global caption (parts of older versions: null)
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("timings", pa.string()),  # JSON {stage: seconds}
        ("events", pa.string()),  # JSON {"stage.outcome": count}
    ]
)

INDEX_COLUMNS = [
    "key", "shard", "image_member", "image_offset", "image_size", "json_offset", "json_size",
    "width", "height", "kind", "n_regions", "n_captioned", "box_widths", "box_heights", "caption_words",
    "caption_sources", "question_words", "global_caption_words", "dataset", "uri",
]


QUARANTINE_COLUMNS = ["uri", "dataset", "reason", "detail"]


def read_part(path: OutputPath, schema: pa.Schema = PART_SCHEMA, columns: list[str] | None = None) -> pa.Table:
    with open_binary(path) as f:
        return pq.read_table(f, schema=schema, columns=columns)


def read_parts(layout: OutputLayout, schema: pa.Schema = PART_SCHEMA) -> pa.Table:
    """Every committed part in one table (small outputs and tests; the writers below stream)."""
    files = layout.part_files()
    if not files:
        return schema.empty_table()
    return pa.concat_tables([read_part(p, schema) for p in files])


def _write_filtered(path: OutputPath, layout: OutputLayout, status: str, columns: list[str] | None,
                    schema: pa.Schema) -> int:
    """Stream the rows of every part with ``status`` into one parquet file, part by part (an output
    of millions of rows is never held whole in memory)."""
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns if c in schema.names])
    n = 0
    with atomic_writer(path) as f, pq.ParquetWriter(f, wanted) as out:
        for part in layout.part_files():
            table = read_part(part, schema)
            table = table.filter(pc.equal(table["status"], status)).select(wanted.names)
            if table.num_rows:
                out.write_table(table)
                n += table.num_rows
    return n


def write_index(layout: OutputLayout, columns: list[str] | None = INDEX_COLUMNS,
                schema: pa.Schema = PART_SCHEMA) -> int:
    """index.parquet: one row per written sample (``columns`` of the parts, all when None), ordered by
    shard then position."""
    return _write_filtered(layout.index, layout, "written", columns, schema)


def write_quarantine(layout: OutputLayout) -> int:
    """quarantine.parquet: every quarantined input with its reason and detail, in commit order."""
    return _write_filtered(layout.quarantine, layout, "quarantined", QUARANTINE_COLUMNS, PART_SCHEMA)
