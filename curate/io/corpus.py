"""CorpusWriter: turns finished rows into shards, parts, index and manifest; resumes a killed run.

Shard n of a run is ``shards/S-n.tar`` (and ``questions/S-n.tar`` when its images have questions),
committed by its part ``parts/S-n.parquet``: one row per input handled since the last commit,
written or quarantined. Ownership, the lock, the journal and the verified resume are the
committer's (curate/io/committer.py). On resume every input named in a verified part is skipped;
so a SIGKILL at any point loses at most the open shard's work and never shows a partial shard or
duplicates a sample.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from curate import __version__
from curate.config import OutputConfig, PipelineConfig
from curate.io import interrupt
from curate.io.committer import Committer
from curate.io.index import PART_SCHEMA, read_parts, write_index, write_quarantine
from curate.io.manifest import RunTally, now_iso, read_manifest_lenient, write_manifest
from curate.io.ownership import OutputConflict, OutputRefused  # noqa: F401  (re-exported for callers)
from curate.io.shards import ShardWriter
from curate.records import ImageRecord, PipelineInfo, QuarantineReason, QuestionRecord, Region


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


class CorpusWriter:
    def __init__(self, root: str | Path, cfg: PipelineConfig, verify: bool = False):
        self.cfg = cfg
        self.out: OutputConfig = cfg.output
        self.pipeline = PipelineInfo(name=cfg.name, config_sha256=cfg.sha256(), curate_version=__version__)
        self.committer = Committer(str(root), "corpus", self.pipeline.config_sha256, cfg.output.split,
                                   PART_SCHEMA, [src.path for src in cfg.sources], verify=verify)
        self.layout = self.committer.layout
        self.tally = RunTally()
        self.done_counts: Counter[str] = Counter()  # inputs committed, by URI (a URI listed twice counts twice)
        self.key_to_uri: dict[str, str] = {}
        self.started_at = now_iso()
        self._t0 = time.monotonic()
        self._prior_seconds = 0.0
        self._shard: ShardWriter | None = None
        self._questions: ShardWriter | None = None
        self._pending: list[dict] = []
        self._opened_at = time.monotonic()
        self.resumed_rows = 0

    @property
    def done_uris(self) -> set[str]:
        return set(self.done_counts)

    @property
    def notes(self) -> list[str]:
        return self.committer.notes

    # ------------------------------------------------------------ resume

    def open(self) -> CorpusWriter:
        """Claim or resume the output: raises OutputRefused (OutputConflict for another config,
        OutputLocked while another run writes there) before anything is changed."""
        parts = self.committer.open()
        previous = read_manifest_lenient(self.layout)
        if previous is not None:
            self.started_at = previous.started_at
            self._prior_seconds = previous.wall_seconds
        for table in parts:
            for row in table.to_pylist():
                self._account(row)
            self.resumed_rows += table.num_rows
        self._write_manifest("running")
        return self

    def _account(self, row: dict) -> None:
        self.tally.add(row)
        self.done_counts[row["uri"]] += 1
        if row["status"] == "written":
            self.key_to_uri[row["key"]] = row["uri"]

    # ------------------------------------------------------------ writing

    def add(self, row: dict) -> None:
        with interrupt.critical():  # a Ctrl-C waits until the sample is whole in the shard
            self._add(row)

    def _due(self) -> bool:
        """Whether the open shard (or the pending quarantine-only rows) should be committed now."""
        if self._shard is not None and (self._shard.n_samples >= self.out.shard_max_samples
                                        or self._shard.bytes_written >= self.out.shard_max_bytes):
            return True
        if self._shard is None and len(self._pending) >= self.out.shard_max_samples:
            return True
        # Long runs commit steadily even when rows are slow to come.
        return bool(self._pending) and time.monotonic() - self._opened_at >= self.out.shard_max_seconds

    def _add(self, row: dict) -> None:
        if not self._pending:
            self._opened_at = time.monotonic()
        if row["status"] == "ok":
            first = self.key_to_uri.get(row["key"])
            if first is not None:
                row.update(status="quarantined", reason=QuarantineReason.duplicate.value,
                           detail=f"same bytes as {first}")
        if row["status"] == "quarantined":
            self._pending.append(self._part_row(row, status="quarantined"))
            if self._due():
                self.commit()
            return
        if self._shard is None:
            self._shard = self.committer.shard_writer(self.layout.shards_dir)
        locations = self._shard.add(row["key"], {row["image_ext"]: row["image"],
                                                 "json": record_json(row, self.pipeline)})
        self.key_to_uri[row["key"]] = row["uri"]
        questions = question_samples(row, self._shard.path.name)
        for key, data in questions:
            if self._questions is None:
                self._questions = self.committer.shard_writer(self.layout.questions_dir)
            members = {"json": data}
            if self.cfg.retarget.embed_image:
                members = {row["image_ext"]: row["image"], **members}
            self._questions.add(key, members)
        part_row = self._part_row(row, status="written")
        part_row.update(
            shard=self._shard.path.name,
            image_member=f"{row['key']}.{row['image_ext']}",
            image_offset=locations[row["image_ext"]].offset,
            image_size=locations[row["image_ext"]].size,
            json_offset=locations["json"].offset,
            json_size=locations["json"].size,
        )
        self._pending.append(part_row)
        if self._due():
            self.commit()

    def _part_row(self, row: dict, status: str) -> dict:
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
            "reason": row["reason"], "detail": row["detail"],
            "timings": row["timings"], "events": row["events"],
        }

    def commit(self) -> None:
        """Make the open shard and its part visible (shards first, part last: the part commits)."""
        with interrupt.critical():
            self._commit()

    def _commit(self) -> None:
        if not self._pending:
            return
        closed = []
        for writer in (self._shard, self._questions):
            if writer is not None:
                writer.close()
                closed.append(writer)
        self._shard = self._questions = None
        self.committer.commit(closed, self._pending)
        for row in self._pending:
            self._account(row)
        self._pending = []
        self._write_manifest("running")

    def finish(self) -> None:
        """Commit what is open, then write index.parquet, quarantine.parquet and the complete manifest."""
        try:
            self.commit()
            parts = read_parts(self.layout)
            write_index(self.layout, parts)
            write_quarantine(self.layout, parts)
            self._write_manifest("complete")
        finally:
            self.committer.close()

    def interrupted(self) -> None:
        """A Ctrl-C or SIGTERM between samples: commit the complete samples of the open shard, mark
        the manifest ``interrupted`` and let the output go; the same command resumes."""
        try:
            self.commit()
            self._write_manifest("interrupted")
        finally:
            self.committer.close(failed=not self.committer.committed_any)

    def abort(self) -> None:
        """Leave no partial shard behind after an error; committed parts stay for a resume."""
        try:
            for writer in (self._questions, self._shard):
                if writer is not None:
                    writer.abort()
            self._shard = self._questions = None
            self._pending = []
        finally:
            self.committer.close(failed=True)

    def _write_manifest(self, status: str) -> None:
        wall = self._prior_seconds + time.monotonic() - self._t0
        write_manifest(self.layout, self.cfg, self.tally, status, self.started_at, wall)
