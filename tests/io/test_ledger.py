"""The ledger: which listed inputs a resume skips, and who owns a content key."""

from __future__ import annotations

import pyarrow as pa

from curate.io.ledger import Ledger


def part(*rows: tuple[str, str, str | None]) -> pa.Table:
    return pa.table({"uri": [r[0] for r in rows], "status": [r[1] for r in rows], "key": [r[2] for r in rows]})


def test_each_committed_occurrence_skips_one_listed_occurrence_and_answers_stay_the_same():
    ledger = Ledger()
    ledger.seed(part(("a", "written", "k1"), ("b", "quarantined", None), ("c", "written", "k3"),
                     ("c", "quarantined", None)))
    # "a" listed twice but committed once: the first listing is skipped, the second is redone
    assert ledger.skip(["a", "b", "a", "d"], [0, 1, 2, 3]) == [True, True, False, False]
    assert ledger.skip(["a", "a"], [0, 2]) == [True, False]  # asked again: the same answers
    # "c" committed twice (written, then its duplicate): both listings are skipped
    assert ledger.skip(["c", "c", "c"], [4, 5, 6]) == [True, True, False]
    assert ledger.skip(["c", "c"], [5, 4]) == [True, True]
    assert ledger.n_skipped == 4


def test_the_first_input_with_a_key_writes_and_later_ones_are_its_duplicates():
    ledger = Ledger()
    ledger.seed(part(("old.jpg", "written", "k1")))
    assert ledger.claim(["k1"], ["new.jpg"], [0]) == ["old.jpg"]  # committed before this run
    assert ledger.claim(["k2", "k2"], ["x.jpg", "y.jpg"], [1, 2]) == [None, "x.jpg"]
    assert ledger.claim(["k2"], ["x.jpg"], [1]) == [None]  # a retried claim by the owner still writes


def test_a_ledger_shard_keeps_only_what_routes_to_it():
    shards = [Ledger(i, 3) for i in range(3)]
    table = part(*[(f"u{i}", "written", f"k{i}") for i in range(30)])
    for shard in shards:
        shard.seed(table)
    assert sum(len(s.committed) for s in shards) == 30
    assert all(s.committed for s in shards)
