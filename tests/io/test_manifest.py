"""The run tally over part tables: counts, shards, quarantine, stage times and events."""

from __future__ import annotations

import json

import pyarrow as pa

from curate.io.index import PART_SCHEMA
from curate.io.manifest import RunTally


def part_rows() -> list[dict]:
    rows = []
    for i in range(7):
        written = i % 3 != 2
        rows.append({
            "uri": f"/in/{i}.jpg", "dataset": "d", "status": "written" if written else "quarantined",
            "key": f"{i:020x}" if written else None, "shard": f"train-{i // 4:06d}.tar" if written else None,
            "n_regions": i, "n_captioned": i // 2,
            "reason": None if written else "truncated", "detail": None if written else f"bad {i}",
            # int and float seconds, a stage missing from some rows, a row with no timings at all
            "timings": None if i == 5 else json.dumps({"ingest": 0.5 * i, **({"regions": i} if i % 2 else {})}),
            "events": json.dumps({"regions.masks": 3 * i, "caption.skipped": 1}) if i != 4 else "{}",
        })
    return rows


def test_tally_of_part_tables_adds_up_every_row():
    rows = part_rows()
    tally = RunTally()
    table = pa.Table.from_pylist(rows, schema=PART_SCHEMA)
    tally.add_table(table.slice(0, 3))
    tally.add_table(table.slice(3))
    # rows 0, 1, 3, 4, 6 written; 2 and 5 quarantined
    c = tally.counts
    assert (c.read, c.written, c.quarantined) == (7, 5, 2)
    assert (c.regions, c.captioned_regions) == (0 + 1 + 3 + 4 + 6, 0 + 0 + 1 + 2 + 3)
    assert tally.shards == ["train-000000.tar", "train-000001.tar"]
    assert [(q.uri, q.reason.value, q.detail) for q in tally.quarantine] == [
        ("/in/2.jpg", "truncated", "bad 2"), ("/in/5.jpg", "truncated", "bad 5")]
    assert tally.quarantine_reasons == {"truncated": 2}
    # timings: every row but 5 has ingest (0.5 * i, ints and floats), odd rows 1 and 3 have regions
    assert tally.stage_rows == {"ingest": 6, "regions": 2}
    assert abs(tally.stage_seconds["ingest"] - 0.5 * (0 + 1 + 2 + 3 + 4 + 6)) < 1e-9
    assert abs(tally.stage_seconds["regions"] - (1 + 3)) < 1e-9
    # events: every row but 4
    assert tally.stage_events == {"regions": {"masks": 3 * (0 + 1 + 2 + 3 + 5 + 6)}, "caption": {"skipped": 6}}
