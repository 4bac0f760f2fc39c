"""What a run has committed, split over a few shards by hash so no one process holds all of it.

A Ledger shard answers two questions for the inputs routed to it:
  skip:  is this listed input already committed? (resume; routed by URI)
  claim: is this content key already written by another input? (dedup; routed by key)
An input is named by its member (the URI; ``URI#id`` where one file holds many inputs, as a VQA
list does) and its position in the listing. Both answers are idempotent per input identity: a write that Ray
retries claims again and gets the same answer, and a skip asked twice is answered the same.
Seeded from the committed parts; what a run claims but never commits is forgotten with the run, so
a resume decides afresh.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable

import pyarrow as pa

COMMITTED = -1  # ordinal of a key's owner committed by an earlier run


def route(text: str, n: int) -> int:
    """The ledger shard of a URI or key: stable across processes (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % n


def identity(uri: str, ordinal: int) -> str:
    return f"{ordinal}\t{uri}"


def _joined(values) -> str:
    return "#".join(map(str, values))


def member(row: dict, columns: tuple[str, ...] = ("uri",)) -> str:
    """What names a row's input: its ``columns`` joined by ``#``."""
    return _joined(row[c] for c in columns)


def members(table: pa.Table, columns: tuple[str, ...] = ("uri",)) -> list[str]:
    """``member`` of each row of a listing or a part table."""
    if len(columns) == 1:
        return table.column(columns[0]).to_pylist()
    return [_joined(values) for values in zip(*(table.column(c).to_pylist() for c in columns))]


class Ledger:
    """One shard (``index`` of ``count``) of the run's committed inputs and claimed keys."""

    def __init__(self, index: int = 0, count: int = 1, identity_columns: tuple[str, ...] = ("uri",)):
        self.index, self.count, self.identity_columns = index, count, identity_columns
        self.committed: Counter[str] = Counter()  # URI -> committed occurrences not yet matched
        # URI -> the ordinal answered "skip" (an int: ~100 bytes a URI at 10^7 inputs), or the set of
        # them for a URI listed more than once
        self.skipped: dict[str, int | set[int]] = {}
        self.owners: dict[str, tuple[str, int]] = {}  # key -> (URI, ordinal) of the input that wrote it
        self.n_skipped = 0

    def mine(self, text: str) -> bool:
        return route(text, self.count) == self.index

    def seed(self, part: pa.Table) -> None:
        """Take in one committed part's rows that route here."""
        columns = (members(part, self.identity_columns), part.column("status").to_pylist(),
                   part.column("key").to_pylist())
        for uri, status, key in zip(*columns):
            if self.mine(uri):
                self.committed[uri] += 1
            if status == "written" and key and self.mine(key):
                self.owners.setdefault(key, (uri, COMMITTED))

    def skip(self, uris: Iterable[str], ordinals: Iterable[int]) -> list[bool]:
        """For each listed input: already committed? Each committed occurrence of a URI matches one
        listed occurrence, so a URI listed twice is accounted the same after a resume."""
        out = []
        for uri, ordinal in zip(uris, ordinals):
            done = self.skipped.get(uri)
            if done is not None and (ordinal == done if isinstance(done, int) else ordinal in done):
                out.append(True)
            elif self.committed.get(uri, 0) > 0:
                self.committed[uri] -= 1
                if self.committed[uri] == 0:
                    del self.committed[uri]
                if done is None:
                    self.skipped[uri] = ordinal
                elif isinstance(done, int):
                    self.skipped[uri] = {done, ordinal}
                else:
                    done.add(ordinal)
                self.n_skipped += 1
                out.append(True)
            else:
                out.append(False)
        return out

    def claim(self, keys: Iterable[str], uris: Iterable[str], ordinals: Iterable[int]) -> list[str | None]:
        """For each finished input: None when it is the first with its content key (it writes),
        else the URI of the input that has that key."""
        out = []
        for key, uri, ordinal in zip(keys, uris, ordinals):
            owner = self.owners.setdefault(key, (uri, ordinal))
            out.append(None if owner == (uri, ordinal) and ordinal != COMMITTED else owner[0])
        return out
