"""`curate augment canvas`: VQA items -> Ray Data render tasks -> the run's writers (local disk or
object storage), through the same runner as the corpus (curate/runner.py); the driver lists the
items and counts the part rows.

Output layout and commit protocol are the corpus's (curate/io/layout.py): ``shards/`` tars,
``parts/`` parquet commit markers (one row per input, written or quarantined), ``index.parquet``
and ``manifest.json``; a killed run resumes from its parts, an input being its ``uri#id``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image

from curate.augment.canvas import paste, plan_canvas
from curate.augment.config import CanvasPipelineConfig
from curate.augment.vqa_sources import NO_IMAGE, iter_vqa_items, row_group_keys, table_images
from curate.config import IngestConfig
from curate.io import fs, interrupt
from curate.io.committer import CommitTarget, Committer, ShardNumber
from curate.io.index import write_index
from curate.io.layout import atomic_write_bytes
from curate.io.ledger import identity, member
from curate.io.shards import ShardWriter
from curate.io.sources import numbered_batches
from curate.records import CanvasRecord

log = logging.getLogger("curate")

IDENTITY = ("uri", "id")  # what names a VQA item: one file may hold many
CANVASES_PER_TASK = 16  # a render-and-write task's canvases, and so its shard's (tens of MB at 1K-4K)
SOURCE_MAX_BYTES = 256 * 1024 * 1024  # a VQA image file larger than this is refused unread
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

PART_SCHEMA = pa.schema([
    ("uri", pa.string()), ("id", pa.string()), ("status", pa.string()), ("key", pa.string()),
    ("shard", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("box", pa.list_(pa.int32())), ("background", pa.string()), ("turns", pa.int32()),
    ("reason", pa.string()), ("detail", pa.string()),
])


def load_source(item: dict, max_side: int) -> tuple[Image.Image, bytes]:
    """Decode a VQA image with the corpus's guards (bombs, truncation, modes, EXIF)."""
    from curate.ops.decode import open_checked, orient, to_8bit_rgb_or_l

    data = item["image_bytes"] or fs.read_capped(item["uri"], SOURCE_MAX_BYTES)
    if not data:
        raise ValueError("zero-byte image")
    guards = IngestConfig(min_side=1, max_side=max_side, max_aspect_ratio=1000.0)
    img = open_checked(data, guards)
    img, _ = to_8bit_rgb_or_l(img)
    img, _ = orient(img)
    return img.convert("RGB"), data


def background_files(folder: str | None) -> list[Path]:
    """The background photos under ``folder``, by absolute path: the render tasks open them on
    every node, and a relative folder is the driver's."""
    if not folder:
        return []
    return sorted(p for p in Path(fs.absolute(folder)).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def render_item(item: dict, cfg: CanvasPipelineConfig, backgrounds: list[Path]) -> dict:
    """One VQA item -> a finished sample (image bytes + record) or a quarantined row with its reason."""
    out = {**item, "image_bytes": None, "canvas": None, "record": None}
    if item["status"] == "quarantined":
        return out
    try:
        source, data = load_source(item, cfg.max_source_side)
    except Exception as e:
        reason = getattr(e, "reason", None)
        return {**out, "status": "quarantined", "reason": getattr(reason, "value", "unreadable"),
                "detail": getattr(e, "detail", None) or f"{type(e).__name__}: {e}"}
    plan = plan_canvas(source.width, source.height, cfg.canvas, cfg.canvas.seed, item["index"], len(backgrounds))
    bg = Image.open(backgrounds[plan.background_index]) if plan.background == "image" else None
    canvas = paste(source, plan, bg)
    buf = io.BytesIO()
    fmt = cfg.canvas.image_format
    canvas.save(buf, format="PNG" if fmt == "png" else "JPEG", **({"compress_level": 3} if fmt == "png" else
                                                                    {"quality": 95}))
    sha = hashlib.sha256(data).hexdigest()
    key = hashlib.sha256(f"{sha}:{item['id']}:{json.dumps(plan.as_dict(), sort_keys=True)}".encode()).hexdigest()[:20]
    x0, y0, x1, y1 = plan.box
    record = CanvasRecord(
        key=key, source={"uri": item["uri"], "dataset": item["dataset"], "id": item["id"], "sha256": sha,
                         "width": source.width, "height": source.height},
        width=plan.width, height=plan.height, image_ext=fmt, box=plan.box,
        box_norm=(x0 / plan.width, y0 / plan.height, x1 / plan.width, y1 / plan.height), scale=plan.scale,
        background=plan.background, conversations=json.loads(item["conversations"]), seed=cfg.canvas.seed)
    return {**out, "status": "ok", "key": key, "canvas": buf.getvalue(), "record": record.model_dump_json()}


def canvas_part(row: dict, shard: str | None) -> dict:
    """The part row (commit record) of one rendered or quarantined item."""
    part = {"uri": row["uri"], "id": row["id"], "status": "quarantined", "key": None, "shard": None,
            "width": None, "height": None, "box": None, "background": None, "turns": None,
            "reason": row.get("reason"), "detail": row.get("detail")}
    if row["status"] == "ok":
        record = json.loads(row["record"])
        part.update(status="written", key=row["key"], shard=shard, width=record["width"], height=record["height"],
                    box=record["box"], background=record["background"], turns=len(record["conversations"]),
                    reason=None, detail=None)
    return part


class CanvasShardSession:
    """One writer's open canvas shard and the part rows that will commit it (driver or worker)."""

    def __init__(self, target: CommitTarget, cfg: CanvasPipelineConfig, next_number: Callable[[], int]):
        self.target, self.cfg = target, cfg
        self.number = ShardNumber(target, next_number)
        self.shard: ShardWriter | None = None
        self.pending: list[dict] = []
        self.opened_at = time.monotonic()

    def add(self, row: dict) -> None:
        if not self.pending:
            self.opened_at = time.monotonic()
        shard = None
        if row["status"] == "ok":
            if self.shard is None:
                self.shard = self.target.shard_writer(self.target.layout.shards_dir, self.number.get())
            self.shard.add(row["key"], {self.cfg.canvas.image_format: row["canvas"], "json": row["record"].encode()})
            shard = self.shard.path.name
        self.pending.append(canvas_part(row, shard))

    def due(self, by_time: bool) -> bool:
        out = self.cfg.output
        if len(self.pending) >= out.shard_max_samples:
            return True
        if self.shard is not None and self.shard.bytes_written >= out.shard_max_bytes:
            return True
        return by_time and bool(self.pending) and time.monotonic() - self.opened_at >= out.shard_max_seconds

    def commit(self, block: str | None = None) -> list[dict]:
        """Close the shard and write the part (last: it commits); returns the committed part rows."""
        if not self.pending:
            return []
        closed = [self.shard] if self.shard is not None else []
        for writer in closed:
            writer.close()
        self.target.commit(self.number.get(), closed, self.pending, block)
        rows = self.pending
        self.shard, self.pending = None, []
        self.number.release()
        return rows

    def abort(self) -> None:
        if self.shard is not None:
            self.shard.abort()
        self.shard, self.pending = None, []


@dataclass
class CanvasSink:
    """The canvas's Sink for the run's writers (curate/io/writing.py)."""

    target: CommitTarget
    cfg: CanvasPipelineConfig
    next_number: Callable[[], int]

    @property
    def row_schema(self) -> pa.Schema:
        return RENDERED_SCHEMA

    @property
    def part_schema(self) -> pa.Schema:
        return PART_SCHEMA

    def session(self) -> CanvasShardSession:
        return CanvasShardSession(self.target, self.cfg, self.next_number)

    def member(self, row: dict) -> str:
        return identity(member(row, IDENTITY), row["ordinal"])

    def claim(self, rows: list[dict]) -> None:
        """Nothing to claim: a canvas's key hashes its listing position's plan, so no two inputs share one."""


class CanvasRun:
    """The driver's side of a canvas run: claim, lock and verify the output, count what the writers
    commit (only their part rows reach the driver), index and manifest at the end."""

    def __init__(self, cfg: CanvasPipelineConfig):
        self.cfg = cfg
        sources = [p for p in (cfg.source.path, cfg.source.images, cfg.canvas.background_images) if p]
        self.committer = Committer(cfg.output.path, "canvas", cfg.sha256(), cfg.output.split, PART_SCHEMA, sources)
        self.layout = self.committer.layout
        self.resumed_rows = 0
        self._reset_counts()
        self._manifest_at = 0.0

    def _reset_counts(self) -> None:
        self.counts = Counter()
        self.quarantine: list[dict] = []
        self.shards: list[str] = []

    @property
    def notes(self) -> list[str]:
        return self.committer.notes

    @property
    def target(self) -> CommitTarget:
        return self.committer.target

    def open(self):
        self.committer.open(self._tally_table)
        self.resumed_rows = self.counts["read"]
        return self

    def _tally_table(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self._tally(row)

    def _tally(self, row: dict) -> None:
        self.counts["read"] += 1
        if row["status"] == "written":
            self.counts["written"] += 1
            if row["shard"] not in self.shards:
                self.shards.append(row["shard"])
        else:
            self.counts["quarantined"] += 1
            self.quarantine.append({"uri": row["uri"], "id": row["id"], "reason": row["reason"],
                                    "detail": row["detail"]})

    def committed(self, rows: list[dict]) -> None:
        """Part rows a writer committed: counted; the manifest kept current every few seconds."""
        if rows:
            self.committer.committed_any = True
        for row in rows:
            self._tally(row)
        if time.monotonic() - self._manifest_at >= 5.0:
            self.write_manifest("running")

    def _flush(self) -> None:
        """Commit what this process still holds (nothing when the writers are Ray tasks)."""

    def _recount(self) -> set[str]:
        """Counts from the parts as they stand after a final verification (which drops a part that a
        retried write task committed twice); returns the committed stems."""
        self._reset_counts()
        return self.committer.verify_parts(self._tally_table)

    def finish(self, wall_seconds: float) -> None:
        """Drop parts that a retried write task committed twice, recount from the parts, then write
        the index and the complete manifest."""
        try:
            self._flush()
            self.committer.clean_uncommitted(self._recount())
            write_index(self.layout, columns=None, schema=PART_SCHEMA)
            self.write_manifest("complete", wall_seconds)
        finally:
            self.committer.close()

    def interrupted(self, wall_seconds: float) -> None:
        """A Ctrl-C or SIGTERM: commit what this process holds, count what the write tasks committed,
        mark the manifest ``interrupted`` and let the output go; the same command resumes."""
        try:
            self._flush()
            self._recount()
            self.write_manifest("interrupted", wall_seconds)
        finally:
            self.committer.close(failed=not self.committer.committed_any)

    def abort(self) -> None:
        self.committer.close(failed=True)

    def write_manifest(self, status: str, wall_seconds: float | None = None) -> None:
        self._manifest_at = time.monotonic()
        complete = status == "complete"
        reasons = Counter(q["reason"] for q in self.quarantine)
        manifest = {
            "name": self.cfg.name, "kind": "canvas", "config": self.cfg.model_dump(mode="json"),
            "config_sha256": self.cfg.sha256(), "status": status,
            "counts": {k: self.counts.get(k, 0) for k in ("read", "written", "quarantined")},
            "wall_seconds": wall_seconds, "quarantine_reasons": dict(sorted(reasons.items())),
            "shards": self.shards if complete else [], "quarantine": self.quarantine if complete else [],
        }
        atomic_write_bytes(self.layout.manifest, json.dumps(manifest, indent=2).encode())


class CanvasWriter(CanvasRun):
    """A canvas run that writes in this process, item by item (tests and tools), through the same
    shard session as the Ray write tasks; shards also close on ``shard_max_seconds``."""

    def open(self) -> CanvasWriter:
        super().open()
        self.session = CanvasShardSession(self.target, self.cfg, self.committer.take_number)
        return self

    def add(self, row: dict) -> None:
        self.session.add(row)
        if self.session.due(by_time=True):
            self.committed(self.session.commit())

    def _flush(self) -> None:
        self.committed(self.session.commit())

    def abort(self) -> None:
        try:
            self.session.abort()
        finally:
            super().abort()


@dataclass
class CanvasResult:
    read: int
    written: int
    quarantined: int
    skipped_done: int
    output: str


def run_canvas(cfg: CanvasPipelineConfig, on_progress: Callable[[int, int], None] | None = None) -> CanvasResult:
    """Render on Ray tasks and write through the runner's writers; the driver lists, counts part
    rows and finishes the output."""
    from curate.runner import IncompleteRun, Listed, RunKind, run_kind, take_commits

    start = time.monotonic()
    run = CanvasRun(cfg).open()
    listing = Listed()
    try:
        # Canvases are rendered in the write task that commits them (a block's canvases are its shard);
        # a table's rows go in blocks along its row groups, each group read by one task.
        kind = RunKind(identity_columns=IDENTITY, sink=lambda target, numbers, _: CanvasSink(target, cfg, numbers),
                       stages=lambda ds, _: ds, block_rows=min(CANVASES_PER_TASK, cfg.output.shard_max_samples),
                       make_in_writer=functools.partial(render_batch, cfg=cfg), groups=row_group_keys(cfg.source))
        results = run_kind(cfg, run, kind, vqa_batches(cfg.source), lambda n: listing.set(n, run.resumed_rows))
        skipped = take_commits(results, run.committed, listing, str(cfg.output.path), "canvases", on_progress)
        run.finish(time.monotonic() - start)
    except KeyboardInterrupt:
        interrupt.ignore_further()  # a second Ctrl-C must not cut the cleanup short
        run.interrupted(time.monotonic() - start)
        raise
    except IncompleteRun:  # what is committed stays, marked interrupted, for the same command to resume
        run.interrupted(time.monotonic() - start)
        raise
    except BaseException:
        run.abort()
        raise
    c = run.counts
    return CanvasResult(c["read"], c["written"], c["quarantined"], skipped, str(run.layout.root))


LISTED_SCHEMA = pa.schema([
    ("ordinal", pa.int64()), ("index", pa.int64()), ("uri", pa.string()), ("dataset", pa.string()),
    ("id", pa.string()), ("conversations", pa.string()), ("image_bytes", pa.binary()), ("table_row", pa.int64()),
    ("status", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
])
RENDERED_SCHEMA = pa.schema([
    *(f for f in LISTED_SCHEMA if f.name != "image_bytes"),
    ("key", pa.string()), ("canvas", pa.binary()), ("record", pa.string()),
])


def vqa_batches(source, size: int = 1024) -> Iterator[pa.Table]:
    """The VQA items as tables of up to ``size`` rows, numbered in listing order (their ordinal)."""
    return numbered_batches(iter_vqa_items(source), lambda rows: pa.Table.from_pylist(rows, schema=LISTED_SCHEMA),
                            size)


def render_batch(table: pa.Table, cfg: CanvasPipelineConfig) -> pa.Table:
    """A Ray task: render a batch of VQA items (the source bytes stay here; the canvases go on to
    the writers)."""
    backgrounds = background_files(cfg.canvas.background_images)
    items = with_table_images(table.to_pylist(), cfg)
    rows = [render_item(item, cfg, backgrounds) for item in items]
    return pa.Table.from_pylist(rows, schema=RENDERED_SCHEMA)


def with_table_images(items: list[dict], cfg: CanvasPipelineConfig) -> list[dict]:
    """Items whose image is held in the source table get its bytes (read here, in the render task);
    a row without an image is quarantined as the listing would have."""
    in_table = [i for i, item in enumerate(items) if item["table_row"] is not None and item["status"] == "pending"]
    if not in_table:
        return items
    images = table_images(cfg.source.path, cfg.source.image_column, [items[i]["table_row"] for i in in_table],
                          SOURCE_MAX_BYTES)
    out = list(items)
    for i in in_table:
        image = images.get(items[i]["table_row"])
        out[i] = {**items[i], "image_bytes": image} if image else \
            {**items[i], "status": "quarantined", "reason": "invalid_entry", "detail": NO_IMAGE}
    return out
