"""The in-flight row: what travels between stages in Ray Data, with one fixed Arrow schema.

Structured fields (regions, timings, events) travel as JSON strings so every block has the same
schema whatever its rows hold. Quarantined rows keep flowing (status="quarantined") so the writer
accounts for them; model stages pass them through untouched.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa

ROW_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("ordinal", pa.int64()),  # position in the run's listing: with the URI, the input's identity
        ("dataset", pa.string()),
        ("kind_hint", pa.string()),  # natural | document | auto (from the source)
        ("source_caption", pa.string()),
        ("tar_uri", pa.string()),  # the tar holding the input when it is a member of a shard
        ("tar_offset", pa.int64()),  # -1 unless the input is a member of a tar shard
        ("tar_size", pa.int64()),
        ("status", pa.string()),  # pending | ok | quarantined
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("key", pa.string()),
        ("sha256", pa.string()),
        ("kind", pa.string()),
        ("image", pa.binary()),  # stored image bytes (original unless re-encoded)
        ("image_ext", pa.string()),
        ("reencoded", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("regions", pa.string()),  # JSON list of Region dicts
        ("regions_note", pa.string()),
        ("global_caption", pa.string()),
        ("global_caption_skipped", pa.string()),
        ("models", pa.string()),  # JSON {stage: model}
        ("timings", pa.string()),  # JSON {stage: seconds}
        ("events", pa.string()),  # JSON {"stage.outcome": count}
    ]
)

_DEFAULTS = {"tar_offset": -1, "tar_size": -1, "status": "pending", "regions": "[]", "models": "{}",
             "timings": "{}", "events": "{}"}


def new_row(uri: str, dataset: str, kind_hint: str = "auto", source_caption: str | None = None,
            tar_uri: str | None = None, tar_offset: int = -1, tar_size: int = -1) -> dict:
    """A listed input. ``uri`` is what records show (``TAR#MEMBER`` for tar members); the bytes are
    read from ``tar_uri`` at ``tar_offset`` when it is set, never by splitting ``uri``."""
    row = {name: None for name in ROW_SCHEMA.names}
    row.update(_DEFAULTS)
    row.update(uri=uri, dataset=dataset, kind_hint=kind_hint, source_caption=source_caption,
               tar_uri=tar_uri, tar_offset=tar_offset, tar_size=tar_size)
    return row


def to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def quarantine(row: dict, reason: str, detail: str) -> dict:
    row.update(status="quarantined", reason=reason, detail=detail, image=None)
    return row


def add_timing(row: dict, stage: str, seconds: float) -> None:
    timings = json.loads(row["timings"] or "{}")
    timings[stage] = timings.get(stage, 0.0) + seconds
    row["timings"] = json.dumps(timings)


def add_events(row: dict, stage: str, outcomes: Counter | dict) -> None:
    events = Counter(json.loads(row["events"] or "{}"))
    for outcome, n in outcomes.items():
        events[f"{stage}.{outcome}"] += n
    row["events"] = json.dumps(dict(events))


def set_model(row: dict, stage: str, model: str) -> None:
    models = json.loads(row["models"] or "{}")
    models[stage] = model
    row["models"] = json.dumps(models)
