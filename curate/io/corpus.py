"""CorpusWriter: turns finished rows into shards, parts, index and manifest; resumes a killed run.

Commit protocol for shard n: the tar is written as ``shards/S-n.tar.tmp``, fsynced and renamed
(its questions tar, when there are questions, the same way just before it); then its part ``parts/S-n.parquet`` (one row per input handled since the last commit, written or
quarantined) is written the same way. The part is the commit marker: on resume, temp files and any
tar without its part are deleted, and every input named in a part is skipped. So a SIGKILL at any
point loses at most the uncommitted shard's work (redone on restart) and never shows a partial
shard or duplicates a sample.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from curate import __version__
from curate.config import OutputConfig, PipelineConfig
from curate.io.index import read_parts, write_index, write_part
from curate.io.layout import OutputLayout
from curate.io.manifest import RunTally, now_iso, read_manifest, write_manifest
from curate.io.shards import ShardWriter
from curate.records import ImageRecord, PipelineInfo, QuarantineReason, QuestionRecord, Region


class OutputConflict(RuntimeError):
    """The output directory holds a run made with another config."""


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
    def __init__(self, root: str | Path, cfg: PipelineConfig):
        self.cfg = cfg
        self.out: OutputConfig = cfg.output
        self.layout = OutputLayout(Path(root))
        self.pipeline = PipelineInfo(name=cfg.name, config_sha256=cfg.sha256(), curate_version=__version__)
        self.tally = RunTally()
        self.done_uris: set[str] = set()
        self.key_to_uri: dict[str, str] = {}
        self.next_shard = 0
        self.started_at = now_iso()
        self._t0 = time.monotonic()
        self._prior_seconds = 0.0
        self._shard: ShardWriter | None = None
        self._questions: ShardWriter | None = None
        self._pending: list[dict] = []
        self.resumed_rows = 0

    # ------------------------------------------------------------ resume

    def open(self) -> "CorpusWriter":
        """Create or resume the output; raises OutputConflict if it belongs to another config."""
        previous = read_manifest(self.layout)
        if previous is not None and previous.config_sha256 != self.pipeline.config_sha256:
            raise OutputConflict(
                f"{self.layout.root}: holds a run of config {previous.config_sha256[:12]} "
                f"({previous.name}); this config is {self.pipeline.config_sha256[:12]}. "
                "Use another --output, or delete the directory to start over."
            )
        if previous is not None:
            self.started_at = previous.started_at
            self._prior_seconds = previous.wall_seconds
        self.layout.make_dirs()
        self.layout.remove_uncommitted()
        parts = read_parts(self.layout)
        for row in parts.to_pylist():
            self.tally.add(row)
            self.done_uris.add(row["uri"])
            if row["status"] == "written":
                self.key_to_uri[row["key"]] = row["uri"]
        self.resumed_rows = parts.num_rows
        self.next_shard = self.layout.next_shard_number()
        self._write_manifest("running")
        return self

    # ------------------------------------------------------------ writing

    def add(self, row: dict) -> None:
        if row["status"] == "ok":
            first = self.key_to_uri.get(row["key"])
            if first is not None:
                row.update(status="quarantined", reason=QuarantineReason.duplicate.value,
                           detail=f"same bytes as {first}")
        if row["status"] == "quarantined":
            self._pending.append(self._part_row(row, status="quarantined"))
            if self._shard is None and len(self._pending) >= self.out.shard_max_samples:
                self.commit()
            return
        if self._shard is None:
            self._shard = ShardWriter(self.layout.shard(self.out.split, self.next_shard))
        locations = self._shard.add(row["key"], {row["image_ext"]: row["image"],
                                                 "json": record_json(row, self.pipeline)})
        self.key_to_uri[row["key"]] = row["uri"]
        questions = question_samples(row, self._shard.path.name)
        for key, data in questions:
            if self._questions is None:
                self.layout.questions_dir.mkdir(exist_ok=True)
                self._questions = ShardWriter(self.layout.question_shard(self.out.split, self.next_shard))
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
        if (self._shard.n_samples >= self.out.shard_max_samples
                or self._shard.bytes_written >= self.out.shard_max_bytes):
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
        """Make the open shard and its part visible (shard first, part last: the part commits)."""
        if not self._pending:
            return
        if self._questions is not None:
            self._questions.close()
            self._questions = None
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        write_part(self.layout.part(self.out.split, self.next_shard), self._pending)
        self.next_shard += 1
        for row in self._pending:
            self.tally.add(row)
            self.done_uris.add(row["uri"])
        self._pending = []
        self._write_manifest("running")

    def finish(self) -> None:
        """Commit what is open, then write index.parquet and the complete manifest."""
        self.commit()
        write_index(self.layout, read_parts(self.layout))
        self._write_manifest("complete")

    def abort(self) -> None:
        """Leave no partial shard behind after an error; committed parts stay for a resume."""
        for writer in (self._questions, self._shard):
            if writer is not None:
                writer.abort()
        self._shard = self._questions = None
        self._pending = []

    def _write_manifest(self, status: str) -> None:
        wall = self._prior_seconds + time.monotonic() - self._t0
        write_manifest(self.layout, self.cfg, self.tally, status, self.started_at, wall)
