"""The corpus output: finished rows -> shards and parts (anywhere), parts -> index and manifest (driver).

Shard n of a run is ``shards/S-n.tar`` (and ``questions/S-n.tar`` when its images have questions),
committed by its part ``parts/S-n.parquet``: one row per input handled in that shard, written or
quarantined. Ownership, the lock, the opened entries and the verified resume are the committer's
(curate/io/committer.py).

ShardSession  writes rows into shards and commits them; it runs where the rows are (in a Ray write
              task on a worker, or in this process) and returns only the small part rows.
BlockSink     the corpus's Sink for the writers (curate/io/writing.py): sessions, identity, dedup claims.
CorpusRun     the driver: open/resume, tally the part rows it is given, index + manifest at the end.
CorpusWriter  CorpusRun plus a ShardSession in this process (rows added one by one).

On resume every input named in a verified part is skipped, so a SIGKILL at any point loses at most
the open shards' work and never shows a partial shard or duplicates a sample.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import pyarrow as pa

from curate import __version__
from curate.config import PipelineConfig
from curate.io import interrupt
from curate.io.committer import CommitTarget, Committer, ShardNumber
from curate.io.index import PART_SCHEMA, write_index, write_quarantine
from curate.io.ledger import Ledger, identity
from curate.io.manifest import RunTally, now_iso, read_manifest_lenient, write_manifest
from curate.io.ownership import OutputConflict, OutputRefused  # noqa: F401  (re-exported for callers)
from curate.io.shards import ShardWriter
from curate.records import ImageRecord, PipelineInfo, QuarantineReason, QuestionRecord, Region
from curate.rows import ROW_SCHEMA


def record_json(row: dict, pipeline: PipelineInfo) -> bytes:
    """Validate a finished row as an ImageRecord and serialise it (KEY.json)."""
    regions = [Region.model_validate(r) for r in json.loads(row["regions"] or "[]")]
    models = dict(pipeline.models)
    models.update(json.loads(row["models"] or "{}"))
    record = ImageRecord(
        key=row["key"],
        source={"uri": row["uri"], "dataset": row["dataset"]},
        width=row["width"],
        height=row["height"],
        sha256=row["sha256"],
        kind=row["kind"],
        image_ext=row["image_ext"],
        reencoded=row["reencoded"],
        regions=regions,
        regions_note=row["regions_note"],
        global_caption=row["global_caption"],
        global_caption_skipped=row["global_caption_skipped"],
        pipeline=pipeline.model_copy(update={"models": models}),
    )
    return record.model_dump_json(exclude_none=True).encode()


def question_samples(row: dict, shard: str) -> list[tuple[str, bytes]]:
    """(key, QuestionRecord JSON) for each region of a finished row that has a question."""
    samples = []
    for i, region in enumerate(json.loads(row["regions"] or "[]")):
        if region.get("question"):
            record = QuestionRecord(
                key=f"{row['key']}_{i}", image_key=row["key"], image_shard=shard, region_index=i,
                question=region["question"], box=region["box"], box_norm=region["box_norm"],
                caption=region["caption"], model=region["question_model"], width=row["width"],
                height=row["height"], image_ext=row["image_ext"])
            samples.append((record.key, record.model_dump_json().encode()))
    return samples


def part_row(row: dict, status: str) -> dict:
    """The commit record of one input: small (no image bytes), enough for index, stats and resume."""
    regions = json.loads(row["regions"] or "[]")
    return {
        "uri": row["uri"], "dataset": row["dataset"], "status": status, "key": row["key"],
        "shard": None, "image_member": None, "image_offset": None, "image_size": None,
        "json_offset": None, "json_size": None, "width": row["width"], "height": row["height"],
        "kind": row["kind"], "n_regions": len(regions),
        "n_captioned": sum(1 for r in regions if r.get("caption")),
        "box_widths": [r["box"][2] - r["box"][0] for r in regions],
        "box_heights": [r["box"][3] - r["box"][1] for r in regions],
        "caption_words": [len(r["caption"].split()) for r in regions if r.get("caption")],
        "caption_sources": [r["caption_source"] for r in regions if r.get("caption")],
        "question_words": [len(r["question"].split()) for r in regions if r.get("question")],
        "global_caption_words": len(row["global_caption"].split()) if row["global_caption"] else None,
        "reason": row["reason"], "detail": row["detail"],
        "timings": row["timings"], "events": row["events"],
    }


def pipeline_info(cfg: PipelineConfig) -> PipelineInfo:
    return PipelineInfo(name=cfg.name, config_sha256=cfg.sha256(), curate_version=__version__)


class ShardSession:
    """One writer's open shard (and question shard) and the part rows that will commit it."""

    def __init__(self, target: CommitTarget, cfg: PipelineConfig, next_number: Callable[[], int]):
        self.target = target
        self.cfg = cfg
        self.out = cfg.output
        self.pipeline = pipeline_info(cfg)
        self.number = ShardNumber(target, next_number)
        self.shard: ShardWriter | None = None
        self.questions: ShardWriter | None = None
        self.pending: list[dict] = []
        self.opened_at = time.monotonic()

    def due(self, by_time: bool = True) -> bool:
        """Whether the open shard (or the pending quarantine-only rows) should be committed now."""
        if self.shard is not None and (self.shard.n_samples >= self.out.shard_max_samples
                                       or self.shard.bytes_written >= self.out.shard_max_bytes):
            return True
        if self.shard is None and len(self.pending) >= self.out.shard_max_samples:
            return True
        # Long runs commit steadily even when rows are slow to come.
        return by_time and bool(self.pending) and time.monotonic() - self.opened_at >= self.out.shard_max_seconds

    def add(self, row: dict) -> None:
        """Add a finished row (duplicates already marked quarantined by the caller)."""
        if not self.pending:
            self.opened_at = time.monotonic()
        if row["status"] != "ok":
            self.pending.append(part_row(row, status="quarantined"))
            return
        layout = self.target.layout
        if self.shard is None:
            self.shard = self.target.shard_writer(layout.shards_dir, self.number.get())
        locations = self.shard.add(row["key"], {row["image_ext"]: row["image"],
                                                "json": record_json(row, self.pipeline)})
        for key, data in question_samples(row, self.shard.path.name):
            if self.questions is None:
                self.questions = self.target.shard_writer(layout.questions_dir, self.number.get())
            members = {"json": data}
            if self.cfg.retarget.embed_image:
                members = {row["image_ext"]: row["image"], **members}
            self.questions.add(key, members)
        written = part_row(row, status="written")
        written.update(
            shard=self.shard.path.name,
            image_member=f"{row['key']}.{row['image_ext']}",
            image_offset=locations[row["image_ext"]].offset,
            image_size=locations[row["image_ext"]].size,
            json_offset=locations["json"].offset,
            json_size=locations["json"].size,
        )
        self.pending.append(written)

    def commit(self, block: str | None = None) -> list[dict]:
        """Close the shards and write the part (last: it commits); returns the committed part rows."""
        if not self.pending:
            return []
        closed = []
        for writer in (self.shard, self.questions):
            if writer is not None:
                writer.close()
                closed.append(writer)
        self.target.commit(self.number.get(), closed, self.pending, block)
        rows, self.pending = self.pending, []
        self.shard = self.questions = None
        self.number.release()
        return rows

    def abort(self) -> None:
        """Drop the open shards (nothing of them was committed)."""
        for writer in (self.questions, self.shard):
            if writer is not None:
                writer.abort()
        self.shard = self.questions = None
        self.pending = []


class LedgerLike(Protocol):
    def skip(self, uris: list[str], ordinals: list[int]) -> list[bool]: ...
    def claim(self, keys: list[str], uris: list[str], ordinals: list[int]) -> list[str | None]: ...


@dataclass
class BlockSink:
    """The corpus's Sink (curate/io/writing.py): where to commit, the config, shard numbers and the
    ledger (Ray actor clients on a cluster, plain objects in one process)."""

    target: CommitTarget
    cfg: PipelineConfig
    next_number: Callable[[], int]
    ledger: LedgerLike
    row_schema: ClassVar[pa.Schema] = ROW_SCHEMA
    part_schema: ClassVar[pa.Schema] = PART_SCHEMA

    def session(self) -> ShardSession:
        return ShardSession(self.target, self.cfg, self.next_number)

    def member(self, row: dict) -> str:
        return identity(row["uri"], row["ordinal"])

    def claim(self, rows: list[dict]) -> None:
        mark_duplicates(rows, self.ledger)


def mark_duplicates(rows: list[dict], ledger: LedgerLike) -> None:
    """Quarantine every finished row whose content key another input already wrote."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    owners = ledger.claim([r["key"] for r in ok], [r["uri"] for r in ok], [r["ordinal"] for r in ok])
    for row, first in zip(ok, owners):
        if first is not None:
            row.update(status="quarantined", reason=QuarantineReason.duplicate.value,
                       detail=f"same bytes as {first}", image=None)


class CorpusRun:
    """The driver's side of a corpus run: claim/lock/verify on open, tally what is committed (from
    resumed parts and from the part rows the writers return), index and manifest at the end."""

    def __init__(self, root: str | Path, cfg: PipelineConfig, verify: bool = False):
        self.cfg = cfg
        self.pipeline = pipeline_info(cfg)
        self.committer = Committer(str(root), "corpus", self.pipeline.config_sha256, cfg.output.split,
                                   PART_SCHEMA, [src.path for src in cfg.sources], verify=verify)
        self.layout = self.committer.layout
        self.tally = RunTally()
        self.started_at = now_iso()
        self._t0 = time.monotonic()
        self._prior_seconds = 0.0
        self._manifest_at = 0.0
        self.manifest_every_s = 5.0  # a run of millions of rows must not spend its time rewriting it
        self.resumed_rows = 0

    @property
    def notes(self) -> list[str]:
        return self.committer.notes

    @property
    def target(self) -> CommitTarget:
        return self.committer.target

    def open(self, on_part: Callable[[pa.Table], None] | None = None):
        """Claim or resume the output: raises OutputRefused (OutputConflict for another config,
        OutputLocked while another run writes there) before anything is changed. Each committed
        part also goes to ``on_part`` (a ledger to seed)."""
        def take(table: pa.Table) -> None:
            self.tally.add_table(table)
            self.resumed_rows += table.num_rows
            if on_part is not None:
                on_part(table)

        self.committer.open(take)
        previous = read_manifest_lenient(self.layout)
        if previous is not None:
            self.started_at = previous.started_at
            self._prior_seconds = previous.wall_seconds
        self._write_manifest("running")
        return self

    def committed(self, rows: list[dict]) -> None:
        """Part rows that a writer committed: counted, and the manifest kept current."""
        if rows:
            self.committer.committed_any = True
        self.tally.add_table(pa.Table.from_pylist(rows, schema=PART_SCHEMA))
        if time.monotonic() - self._manifest_at >= self.manifest_every_s:
            self._write_manifest("running")

    def finish(self) -> None:
        """Drop retried duplicates, then write index.parquet, quarantine.parquet and the complete manifest."""
        try:
            self._flush()
            committed = self._rebuild_tally()
            # Every writer is done: what a failed attempt left (shards without a part) goes now.
            self.committer.clean_uncommitted(committed)
            write_index(self.layout)
            write_quarantine(self.layout)
            self._write_manifest("complete")
        finally:
            self.committer.close()

    def _flush(self) -> None:
        """Commit what this process still holds (nothing for a driver whose writers are workers)."""

    def _rebuild_tally(self) -> set[str]:
        """Recount from the parts as they stand after a final verification (which drops a part that
        a retried write task committed twice): the manifest says what the index holds."""
        tally = RunTally()
        committed = self.committer.verify_parts(tally.add_table)
        self.tally = tally
        return committed

    def interrupted(self) -> None:
        """A Ctrl-C or SIGTERM: commit what this process holds, mark the manifest ``interrupted`` and
        let the output go; the same command resumes. The counts are taken from the parts, since write
        tasks may have committed shards whose rows the driver had not yet heard of."""
        try:
            self._flush()
            self._rebuild_tally()
            self._write_manifest("interrupted")
        finally:
            self.committer.close(failed=not self.committer.committed_any)

    def abort(self) -> None:
        """Leave no partial shard behind after an error; committed parts stay for a resume."""
        self.committer.close(failed=True)

    def _write_manifest(self, status: str) -> None:
        self._manifest_at = time.monotonic()
        wall = self._prior_seconds + time.monotonic() - self._t0
        write_manifest(self.layout, self.cfg, self.tally, status, self.started_at, wall)


class CorpusWriter(CorpusRun):
    """A corpus run that writes in this process: rows are added one by one (tests, tools, and the
    pipeline's stand-ins); the same ShardSession and ledger as the Ray write tasks."""

    def __init__(self, root: str | Path, cfg: PipelineConfig, verify: bool = False):
        super().__init__(root, cfg, verify)
        self.ledger = Ledger()
        self.done_counts: Counter[str] = Counter()  # inputs committed, by URI (this process's view)
        self.manifest_every_s = 0.0
        self._session: ShardSession | None = None
        self._ordinals = itertools.count()

    def open(self, on_part: Callable[[pa.Table], None] | None = None) -> CorpusWriter:
        def seed(table: pa.Table) -> None:
            self.ledger.seed(table)
            self.done_counts.update(table.column("uri").to_pylist())
            if on_part is not None:
                on_part(table)

        super().open(seed)
        self._session = ShardSession(self.target, self.cfg, self.committer.take_number)
        return self

    @property
    def done_uris(self) -> set[str]:
        return set(self.done_counts)

    @property
    def key_to_uri(self) -> dict[str, str]:
        return {key: uri for key, (uri, _) in self.ledger.owners.items()}

    def add(self, row: dict) -> None:
        with interrupt.critical():  # a Ctrl-C waits until the sample is whole in the shard
            if row.get("ordinal") is None:
                row["ordinal"] = next(self._ordinals)
            mark_duplicates([row], self.ledger)
            self._session.add(row)
            if self._session.due():
                self.commit()

    def commit(self) -> None:
        """Make the open shard and its part visible (shards first, part last: the part commits)."""
        with interrupt.critical():
            rows = self._session.commit()
            self.committed(rows)
            self.done_counts.update(r["uri"] for r in rows)

    def _flush(self) -> None:
        self.commit()

    def abort(self) -> None:
        try:
            if self._session is not None:
                self._session.abort()
        finally:
            super().abort()
