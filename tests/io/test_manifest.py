"""The run tally: column-wise over a part table equals row by row."""

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


def test_tally_of_a_table_equals_the_tally_of_its_rows():
    rows = part_rows()
    by_row, by_table = RunTally(), RunTally()
    for row in rows:
        by_row.add(row)
    table = pa.Table.from_pylist(rows, schema=PART_SCHEMA)
    by_table.add_table(table.slice(0, 3))
    by_table.add_table(table.slice(3))
    assert by_table.counts == by_row.counts
    assert by_table.counts.read == 7 and by_table.counts.quarantined == 2 and by_table.counts.regions == 1 + 3 + 4 + 6
    assert by_table.shards == by_row.shards == ["train-000000.tar", "train-000001.tar"]
    assert by_table.quarantine == by_row.quarantine and by_table.quarantine_reasons == by_row.quarantine_reasons
    assert by_table.stage_rows == by_row.stage_rows
    assert by_table.stage_seconds.keys() == by_row.stage_seconds.keys()
    for stage, seconds in by_row.stage_seconds.items():
        assert abs(by_table.stage_seconds[stage] - seconds) < 1e-9
    assert by_table.stage_events == by_row.stage_events
