"""The run's manifest.json: built from committed part rows, so it always agrees with the shards.

While a run goes on, each commit rewrites a manifest of constant size (counts, stages, quarantine
reasons); the shard and quarantine lists are written once, when the run completes (the parts and
quarantine.parquet hold every quarantined input with its reason).
"""

from __future__ import annotations

import io
import logging
import platform
from collections import Counter, defaultdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from curate import __version__
from curate.config import NoCaptionConfig, PipelineConfig
from curate.io.layout import OutputLayout, atomic_write_bytes
from curate.records import Counts, Manifest, QuarantineEntry, StageStats

log = logging.getLogger("curate")

VERSIONED_PACKAGES = ["ray", "pyarrow", "pillow", "numpy", "torch", "transformers", "vllm", "scikit-image",
                      "rapidocr", "onnxruntime", "webdataset", "pydantic"]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "curate": __version__}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def skipped_stages(cfg: PipelineConfig) -> dict[str, str]:
    """Stages (or halves of them) that the config turns off, with the reason recorded for users."""
    skipped = {}
    for kind in ("natural", "document"):
        kind_cfg = getattr(cfg.caption, kind)
        if isinstance(kind_cfg, NoCaptionConfig):
            skipped[f"caption.{kind}"] = kind_cfg.reason
    if not cfg.retarget.enabled:
        skipped["retarget"] = "no question-retargeting LLM configured"
    return skipped


class RunTally:
    """Running totals over committed part rows (counts, per-stage time and outcomes, quarantine)."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.stage_rows: Counter = Counter()
        self.stage_seconds: defaultdict[str, float] = defaultdict(float)
        self.stage_events: defaultdict[str, Counter] = defaultdict(Counter)
        self.quarantine: list[QuarantineEntry] = []
        self.quarantine_reasons: Counter = Counter()
        self.shards: list[str] = []
        self._shard_set: set[str] = set()

    def add_table(self, table: pa.Table) -> None:
        """Add every row of a part table, column-wise: resuming over 10^7 committed rows must not
        cost a Python call per row (quarantined rows, usually few, are)."""
        status = table.column("status")
        written = pc.equal(status, "written")
        self.counts.read += table.num_rows
        n_written = pc.sum(written).as_py() or 0
        self.counts.written += n_written
        self.counts.regions += pc.sum(pc.filter(table.column("n_regions"), written)).as_py() or 0
        self.counts.captioned_regions += pc.sum(pc.filter(table.column("n_captioned"), written)).as_py() or 0
        for shard in pc.unique(pc.drop_null(pc.filter(table.column("shard"), written))).to_pylist():
            if shard not in self._shard_set:
                self._shard_set.add(shard)
                self.shards.append(shard)
        quarantined = table.filter(pc.invert(written)).select(["uri", "reason", "detail"]).to_pylist()
        self.counts.quarantined += len(quarantined)
        for row in quarantined:
            self.quarantine_reasons[row["reason"]] += 1
            self.quarantine.append(QuarantineEntry(uri=row["uri"], reason=row["reason"], detail=row["detail"] or ""))
        for name, column in _json_columns(table.column("timings")).items():
            self.stage_rows[name] += len(column) - column.null_count
            self.stage_seconds[name] += pc.sum(column).as_py() or 0.0
        for name, column in _json_columns(table.column("events")).items():
            stage, outcome = name.split(".", 1)
            self.stage_events[stage][outcome] += pc.sum(column).as_py() or 0

    def stages(self, skipped: dict[str, str]) -> dict[str, StageStats]:
        names = sorted(set(self.stage_rows) | set(self.stage_events) | set(skipped))
        return {
            name: StageStats(
                rows=self.stage_rows.get(name, 0),
                seconds=round(self.stage_seconds.get(name, 0.0), 4),
                counts=dict(self.stage_events.get(name, {})),
                skipped=skipped.get(name),
                rates=rates(self.stage_events.get(name, {}), self.stage_seconds.get(name, 0.0)),
            )
            for name in names
        }


def _json_columns(column: pa.ChunkedArray) -> dict[str, pa.ChunkedArray]:
    """A column of flat JSON objects (``{"regions": 0.4}``) as one numeric column per key, parsed by
    Arrow's JSON reader (a key a row lacks is null there)."""
    lines = pc.fill_null(column, "{}").to_pylist()
    if not lines:
        return {}
    parsed = pa_json.read_json(io.BytesIO("\n".join(lines).encode()),
                               read_options=pa_json.ReadOptions(block_size=1 << 26))
    return {name: parsed.column(name) for name in parsed.column_names}


RATE_COUNTS = ("crops", "prompts", "generated_tokens")


def rates(counts: dict[str, int], seconds: float) -> dict[str, float]:
    """Throughput of a model stage: crops/s, prompts/s and generated tokens/s of worker time."""
    if seconds <= 0:
        return {}
    return {f"{name}_per_s": round(counts[name] / seconds, 3) for name in RATE_COUNTS if counts.get(name)}


def write_manifest(layout: OutputLayout, cfg: PipelineConfig, tally: RunTally, status: str, started_at: str,
                   wall_seconds: float) -> Manifest:
    manifest = Manifest(
        name=cfg.name,
        config=cfg.model_dump(mode="json"),
        config_sha256=cfg.sha256(),
        curate_version=__version__,
        versions=package_versions(),
        status=status,
        started_at=started_at,
        finished_at=now_iso() if status == "complete" else None,
        wall_seconds=round(wall_seconds, 3),
        counts=tally.counts,
        stages=tally.stages(skipped_stages(cfg)),
        quarantine_reasons=dict(sorted(tally.quarantine_reasons.items())),
        shards=tally.shards if status == "complete" else [],
        quarantine=tally.quarantine if status == "complete" else [],
    )
    atomic_write_bytes(layout.manifest, manifest.model_dump_json(indent=2).encode())
    return manifest


def read_manifest(layout: OutputLayout) -> Manifest | None:
    if not layout.manifest.exists():
        return None
    return Manifest.model_validate_json(layout.manifest.read_text())


def read_manifest_lenient(layout: OutputLayout) -> Manifest | None:
    """The previous manifest for its start time and wall clock, or None when it is missing or
    damaged: a resume rebuilds it from the parts, which are the record."""
    try:
        return read_manifest(layout)
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); it is rebuilt from the committed parts", layout.manifest,
                    str(e).splitlines()[0])
        return None
