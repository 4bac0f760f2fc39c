"""`curate augment canvas`: VQA items -> Ray Data render tasks -> canvas shards on the driver.

Output layout and commit protocol are the corpus's (curate/io/layout.py): ``shards/`` tars,
``parts/`` parquet commit markers (one row per input, written or quarantined), ``index.parquet``
and ``manifest.json``; a killed run resumes from its parts.
"""

from __future__ import annotations

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
from curate.augment.vqa_sources import list_vqa_items
from curate.config import IngestConfig
from curate.io import fs
from curate.io.committer import Committer
from curate.io.index import write_index
from curate.io.layout import atomic_write_bytes
from curate.io.shards import ShardWriter
from curate.records import CanvasRecord

log = logging.getLogger("curate")

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

    data = item["image_bytes"] or fs.read_capped(item["uri"], 256 * 1024 * 1024)
    if not data:
        raise ValueError("zero-byte image")
    guards = IngestConfig(min_side=1, max_side=max_side, max_aspect_ratio=1000.0)
    img = open_checked(data, guards)
    img, _ = to_8bit_rgb_or_l(img)
    img, _ = orient(img)
    return img.convert("RGB"), data


def background_files(folder: str | None) -> list[Path]:
    if not folder:
        return []
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


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


class CanvasWriter:
    """Shards + parts + index + manifest for canvas samples, through the corpus's committer."""

    def __init__(self, cfg: CanvasPipelineConfig):
        self.cfg = cfg
        sources = [p for p in (cfg.source.path, cfg.source.images,
                               cfg.canvas.background_images) if p]
        self.committer = Committer(cfg.output.path, "canvas", cfg.sha256(), cfg.output.split,
                                   PART_SCHEMA, sources)
        self.layout = self.committer.layout
        self.done: set[str] = set()
        self.counts = Counter()
        self.quarantine: list[dict] = []
        self.shards: list[str] = []
        self._shard: ShardWriter | None = None
        self._pending: list[dict] = []
        self._opened_at = time.monotonic()

    @property
    def notes(self) -> list[str]:
        return self.committer.notes

    def open(self) -> CanvasWriter:
        for table in self.committer.open():
            for row in table.to_pylist():
                self._tally(row)
        return self

    def _tally(self, row: dict) -> None:
        self.done.add(row["uri"] + "#" + row["id"])
        self.counts["read"] += 1
        if row["status"] == "written":
            self.counts["written"] += 1
            if row["shard"] not in self.shards:
                self.shards.append(row["shard"])
        else:
            self.counts["quarantined"] += 1
            self.quarantine.append({"uri": row["uri"], "id": row["id"], "reason": row["reason"],
                                    "detail": row["detail"]})

    def add(self, row: dict) -> None:
        part = {"uri": row["uri"], "id": row["id"], "status": "quarantined", "key": None, "shard": None,
                "width": None, "height": None, "box": None, "background": None, "turns": None,
                "reason": row.get("reason"), "detail": row.get("detail")}
        if row["status"] == "ok":
            if self._shard is None:
                self._shard = self.committer.shard_writer(self.layout.shards_dir)
            ext = self.cfg.canvas.image_format
            self._shard.add(row["key"], {ext: row["canvas"], "json": row["record"].encode()})
            record = json.loads(row["record"])
            part.update(status="written", key=row["key"], shard=self._shard.path.name, width=record["width"],
                        height=record["height"], box=record["box"], background=record["background"],
                        turns=len(record["conversations"]), reason=None, detail=None)
        if not self._pending:
            self._opened_at = time.monotonic()
        self._pending.append(part)
        out = self.cfg.output
        if len(self._pending) >= out.shard_max_samples or time.monotonic() - self._opened_at >= out.shard_max_seconds \
                or (self._shard is not None and self._shard.bytes_written >= out.shard_max_bytes):
            self.commit()

    def commit(self) -> None:
        if not self._pending:
            return
        closed = []
        if self._shard is not None:
            self._shard.close()
            closed.append(self._shard)
            self._shard = None
        self.committer.commit(closed, self._pending)
        for row in self._pending:
            self._tally(row)
        self._pending = []
        self.write_manifest("running")

    def finish(self, wall_seconds: float) -> None:
        try:
            self.commit()
            write_index(self.layout, columns=None, schema=PART_SCHEMA)
            self.write_manifest("complete", wall_seconds)
        finally:
            self.committer.close()

    def abort(self) -> None:
        try:
            if self._shard is not None:
                self._shard.abort()
                self._shard = None
            self._pending = []
        finally:
            self.committer.close(failed=True)

    def write_manifest(self, status: str, wall_seconds: float | None = None) -> None:
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


@dataclass
class CanvasResult:
    read: int
    written: int
    quarantined: int
    skipped_done: int
    output: str


def run_canvas(cfg: CanvasPipelineConfig, on_progress: Callable[[int, int], None] | None = None) -> CanvasResult:
    start = time.monotonic()
    writer = CanvasWriter(cfg).open()
    items = list_vqa_items(cfg.source)
    pending = [it for it in items if f"{it['uri']}#{it['id']}" not in writer.done]
    try:
        for i, row in enumerate(_render(cfg, pending), start=1):
            writer.add(row)
            if on_progress:
                on_progress(i, len(pending))
        writer.finish(time.monotonic() - start)
    except BaseException:
        writer.abort()
        raise
    c = writer.counts
    return CanvasResult(c["read"], c["written"], c["quarantined"], len(items) - len(pending), str(writer.layout.root))


def render_batch(table: pa.Table, cfg: CanvasPipelineConfig) -> pa.Table:
    backgrounds = background_files(cfg.canvas.background_images)
    rows = [render_item(item, cfg, backgrounds) for item in table.to_pylist()]
    return pa.Table.from_pylist(rows, schema=RENDERED_SCHEMA)


RENDERED_SCHEMA = pa.schema([
    ("index", pa.int64()), ("uri", pa.string()), ("dataset", pa.string()), ("id", pa.string()),
    ("conversations", pa.string()), ("image_bytes", pa.binary()), ("status", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()), ("key", pa.string()), ("canvas", pa.binary()),
    ("record", pa.string()),
])


def _render(cfg: CanvasPipelineConfig, pending: list[dict]) -> Iterator[dict]:
    if not pending:
        return
    import ray

    from curate.pipeline import init_ray

    init_ray(cfg)
    blank = {"key": None, "canvas": None, "record": None}
    table = pa.Table.from_pylist([{**it, **blank} for it in pending], schema=RENDERED_SCHEMA)
    step = max(1, min(16, len(pending) // 8 or 1))
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
    ds = ds.map_batches(render_batch, fn_kwargs={"cfg": cfg}, batch_format="pyarrow", batch_size=step, num_cpus=1)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
        yield from batch.to_pylist()
