"""Ingest stage: every listed input becomes a decoded, validated row or a quarantined one."""

from __future__ import annotations

import time

from curate.config import PipelineConfig
from curate.ops.decode import ingest_row
from curate.records import QuarantineReason
from curate.rows import add_timing, quarantine


class IngestStage:
    name = "ingest"

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg.ingest
        self.image_format, self.quality = cfg.output.image_format, cfg.output.image_quality

    def process(self, rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            if row["status"] == "quarantined":  # by the listing (a list's bad line, a PDF): its reason stands
                out.append(row)
                continue
            start = time.perf_counter()
            try:
                row = ingest_row(row, self.cfg, self.image_format, self.quality)
            except Exception as e:  # a bug or an exotic file must not end the run
                row = quarantine(row, QuarantineReason.stage_error.value, f"ingest: {type(e).__name__}: {e}")
            if row["status"] == "ok":
                add_timing(row, self.name, time.perf_counter() - start)
            out.append(row)
        return out
