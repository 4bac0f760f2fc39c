"""Low-res VQA inputs: LLaVA-style JSON + image folder, or a parquet table (HF datasets' export too).

Each item becomes a dict with its conversation in LLaVA form (``[{"from": "human"|"gpt", "value"}]``)
and where its image is: a path, or, for a table that holds its images (bytes or HF Image structs), the
row number (``table_row``), read by the render task (``table_images``) so that no image byte passes
through the driver. Entries without an image, or with a malformed conversation, are quarantined with
their reason (``status="quarantined"``; a table row's missing image is found when it is read):
nothing is dropped.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.io import fs
from curate.io.objpath import open_binary, output_path

NO_IMAGE = "row has no image"
log = logging.getLogger(__name__)


def _item(index: int, uri: str, dataset: str, sample_id: str, conversations, table_row: int | None = None,
          reason: str | None = None) -> dict:
    return {"index": index, "uri": uri, "dataset": dataset, "id": str(sample_id),
            "conversations": json.dumps(conversations) if conversations is not None else None,
            "image_bytes": None, "table_row": table_row, "status": "quarantined" if reason else "pending",
            "reason": "invalid_entry" if reason else None, "detail": reason}


def join(base: str, name: str) -> str:
    """``name`` under ``base``, a local folder or a URI (object storage); absolute names stay."""
    if fs.scheme_of(name) or Path(name).is_absolute():
        return name
    return str(output_path(base) / name)


def beside(table: str, name: str) -> str:
    """A file a table names, relative to the table's folder (or absolute, or a URI)."""
    return join(str(output_path(table).parent), name)


def conversation_problem(conversations) -> str | None:
    if not isinstance(conversations, list) or not conversations:
        return "no conversations"
    for turn in conversations:
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt", "system") \
                or not isinstance(turn.get("value"), str):
            return f"malformed turn {turn!r:.80}"
    return None


def llava_items(path: str, images: str, dataset: str) -> Iterator[dict]:
    with open_binary(output_path(path)) as f:
        entries = json.loads(f.read())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: a LLaVA file is a JSON list of entries")
    for i, entry in enumerate(entries):
        sample_id = entry.get("id", i) if isinstance(entry, dict) else i
        uri = join(images, entry["image"]) if isinstance(entry, dict) and entry.get("image") else f"{path}#{i}"
        if not isinstance(entry, dict) or not entry.get("image"):
            yield _item(i, uri, dataset, sample_id, None, reason="entry has no image (text-only conversation)")
            continue
        problem = conversation_problem(entry.get("conversations"))
        yield _item(i, uri, dataset, sample_id, entry.get("conversations"), reason=problem)


def holds_paths(table: pq.ParquetFile, column: str) -> bool:
    """Whether a table's image column names files (strings) rather than holding the images."""
    image_type = table.schema_arrow.field(column).type
    return pa.types.is_string(image_type) or pa.types.is_large_string(image_type)


def group_starts(meta: pq.FileMetaData) -> list[int]:
    """The first row of each row group, and the table's row count last."""
    return list(itertools.accumulate((meta.row_group(g).num_rows for g in range(meta.num_row_groups)), initial=0))


def group_of(starts: list[int], row: int) -> int:
    """The row group a row falls in (``starts`` from ``group_starts``)."""
    return bisect.bisect_right(starts, row) - 1


def table_items(path: str, cfg, dataset: str, batch_rows: int = 256) -> Iterator[dict]:
    """A parquet table's rows, read a batch at a time: a table of inline images is never whole in memory."""
    with open_binary(output_path(path)) as f:
        yield from _table_items(pq.ParquetFile(f), path, cfg, dataset, batch_rows)


def _table_items(table: pq.ParquetFile, path: str, cfg, dataset: str, batch_rows: int) -> Iterator[dict]:
    names = table.schema_arrow.names
    for column in (cfg.image_column, cfg.question_column, cfg.answer_column):
        if column not in names:
            raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
    # Paths are listed here; images held in the table (bytes, HF Image structs) stay in it until a
    # render task reads its rows' (table_images).
    paths = holds_paths(table, cfg.image_column)
    columns = [c for c in (cfg.question_column, cfg.answer_column, cfg.id_column) if c]
    columns += [cfg.image_column] if paths else []
    if not paths:
        warn_of_large_groups(table.metadata, path, cfg.image_column)
    rows = (row for batch in table.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys(columns)))
            for row in batch.to_pylist())
    for i, row in enumerate(rows):
        sample_id = row[cfg.id_column] if cfg.id_column else i
        question, answer = row[cfg.question_column], row[cfg.answer_column]
        conversations = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]
        reason = None
        if not isinstance(question, str) or not isinstance(answer, str):
            reason = "question or answer is not text"
        if not paths:
            yield _item(i, f"{path}#{i}", dataset, sample_id, conversations, table_row=i, reason=reason)
            continue
        image = row[cfg.image_column]
        if image is None:
            reason = reason or NO_IMAGE
        uri = beside(path, image) if image else f"{path}#{i}"
        yield _item(i, uri, dataset, sample_id, conversations, reason=reason)


GROUPS_KEPT = 2  # row groups whose image column a worker keeps: a block may straddle two
GROUP_KEPT_BYTES = 64 << 20  # a larger group's column is streamed for the rows wanted, never kept
STREAM_ROWS = 64  # rows per read when streaming a large group
_groups: OrderedDict[tuple, pa.ChunkedArray] = OrderedDict()


def _column_bytes(meta: pq.FileMetaData, group: int, column: str) -> int:
    """Uncompressed bytes of a column in a row group (every leaf of a struct: HF Image's bytes and path)."""
    chunks = (meta.row_group(group).column(j) for j in range(meta.num_columns))
    return sum(c.total_uncompressed_size for c in chunks
               if c.path_in_schema == column or c.path_in_schema.startswith(column + "."))


def warn_of_large_groups(meta: pq.FileMetaData, path: str, column: str) -> None:
    """Say so when a table's row groups hold more image bytes than a render task keeps: each task then
    reads its group from the start up to its rows, so a group is read many times over."""
    sizes = [_column_bytes(meta, g, column) for g in range(meta.num_row_groups)]
    if sizes and max(sizes) > GROUP_KEPT_BYTES:
        rows = max(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
        log.warning("%s: row groups of up to %d rows and %d MB of images; each render task reads its group "
                    "from the start up to its rows. Written with smaller row groups (e.g. pyarrow's "
                    "row_group_size=100, as HF datasets writes images) each image is read about once",
                    path, rows, max(sizes) >> 20)


def _group_images(table: pq.ParquetFile, identity: tuple, group: int, column: str) -> pa.ChunkedArray:
    """A row group's image column, read once per worker process while it is among the last
    ``GROUPS_KEPT`` read: the render tasks of one group's blocks mostly run on the same workers, one
    after another, so a group of many rows is not read again for each block of 16."""
    key = (*identity, group, column)
    if key in _groups:
        _groups.move_to_end(key)
        return _groups[key]
    images = table.read_row_group(group, columns=[column]).column(0)
    _groups[key] = images
    while len(_groups) > GROUPS_KEPT:
        _groups.popitem(last=False)
    return images


def _streamed_images(table: pq.ParquetFile, group: int, column: str, offsets: list[int]) -> list:
    """The images at ``offsets`` (sorted) in a row group, read ``STREAM_ROWS`` at a time up to the last
    one wanted: pyarrow writes up to 1Mi rows per group by default, and such a group's image column
    can be gigabytes, more than a render task may hold for its 16 rows."""
    out, wanted, start = [], iter(offsets), 0
    offset = next(wanted, None)
    for batch in table.iter_batches(batch_size=STREAM_ROWS, row_groups=[group], columns=[column]):
        images = batch.column(0)
        while offset is not None and offset < start + batch.num_rows:
            out.append(images[offset - start].as_py())
            offset = next(wanted, None)
        if offset is None:
            break
        start += batch.num_rows
    return out


def table_images(path: str, image_column: str, rows: list[int], max_bytes: int) -> dict[int, bytes | None]:
    """The images of some rows of a parquet table: each row group they fall in read once (its image
    column only, kept for the next blocks), or, for a group larger than ``GROUP_KEPT_BYTES``, streamed
    up to the last row wanted. An HF Image struct gives its bytes, else the file its path names
    (beside the table); a row without either gives None."""
    with open_binary(output_path(path)) as f:
        table = pq.ParquetFile(f)
        meta = table.metadata
        # a large group is read through a buffer, not fetched whole before its first row (same footer)
        streamed = pq.ParquetFile(f, metadata=meta, pre_buffer=False, buffer_size=1 << 20)
        identity = (path, meta.num_rows, meta.num_row_groups, meta.serialized_size)
        starts = group_starts(meta)
        by_group: dict[int, list[int]] = {}
        for r in sorted(r for r in set(rows) if 0 <= r < starts[-1]):  # a row not in the table gives None
            by_group.setdefault(group_of(starts, r), []).append(r)
        images: dict[int, bytes | None] = {}
        for g, here in by_group.items():
            offsets = [r - starts[g] for r in here]
            if _column_bytes(meta, g, image_column) > GROUP_KEPT_BYTES:
                images.update(zip(here, _streamed_images(streamed, g, image_column, offsets)))
            else:
                column = _group_images(table, identity, g, image_column)
                images.update(zip(here, column.take(pa.array(offsets)).to_pylist()))
    out = {}
    for row, image in images.items():
        if isinstance(image, dict):  # HF datasets' Image feature
            image = image.get("bytes") or image.get("path")
        if isinstance(image, str):
            image = fs.read_capped(beside(path, image), max_bytes)
        out[row] = image
    return out


def row_group_keys(cfg) -> Callable[[pa.Table], list[int]] | None:
    """For a table that holds its images: each listed row's row group (from ``table_row``), so the
    runner can cut blocks along the groups (curate.io.sources.rechunk_by_group) and a group is read by
    one task rather than by every worker its blocks land on. None for other sources."""
    if cfg.format != "table":
        return None
    with open_binary(output_path(cfg.path)) as f:
        table = pq.ParquetFile(f)
        if cfg.image_column not in table.schema_arrow.names:
            return None  # the listing says what is missing
        if holds_paths(table, cfg.image_column):
            return None  # each image is its own file
        starts = group_starts(table.metadata)

    def keys(listed: pa.Table) -> list[int]:
        return [-1 if r is None else group_of(starts, r) for r in listed["table_row"].to_pylist()]

    return keys


def iter_vqa_items(cfg) -> Iterator[dict]:
    """The source's items in file order (a generator: the driver streams them to the plan)."""
    path = cfg.path
    dataset = cfg.dataset or fs.stem(path)
    if cfg.format == "llava":
        return llava_items(path, cfg.images or str(output_path(path).parent), dataset)
    return table_items(path, cfg, dataset)
