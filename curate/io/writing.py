"""A run's writers, for any kind of output (corpus or canvas): what a ``Sink`` says of its rows.

write_block   one block of finished rows -> dedup claims -> shards -> parts (a Ray write task).
StreamWriter  keeps its shard open across batches (``output.writers: stream``) and closes it on
              samples, bytes or ``shard_max_seconds``; ``flush`` commits what is open.

Both return only the part rows (the commit records), never image bytes, so that is all the driver
receives.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from curate.io.committer import block_digest, write_in_blocks


class Session(Protocol):
    """One writer's open shard(s) and the part rows that will commit them."""

    def add(self, row: dict) -> None: ...
    def due(self, by_time: bool) -> bool: ...
    def commit(self, block: str | None = None) -> list[dict]: ...
    def abort(self) -> None: ...


class Sink(Protocol):
    """What a writer needs of a run's kind; small and picklable (it travels to the write actors)."""

    row_schema: pa.Schema  # the finished rows a writer is given
    part_schema: pa.Schema  # the commit records it returns

    def session(self) -> Session: ...
    def member(self, row: dict) -> str: ...  # the input's identity: same on every attempt
    def claim(self, rows: list[dict]) -> None: ...  # quarantine, in place, rows whose content is written


def write_block(rows: list[dict], sink: Sink) -> list[dict]:
    """One block of finished rows -> committed shards; returns their part rows (write_in_blocks:
    a retried task's second copy is dropped by its block digest when the run finishes)."""
    sink.claim(rows)
    return write_in_blocks(sink.session(), rows, sink.member)


def write_table(table: pa.Table, sink: Sink) -> pa.Table:
    """write_block for an Arrow batch, as the write stage gets and returns them."""
    return pa.Table.from_pylist(write_block(table.cast(sink.row_schema).to_pylist(), sink), schema=sink.part_schema)


class StreamWriter:
    """A writer whose shard stays open across batches: a shard closes on samples, bytes or
    ``shard_max_seconds``, whatever the rate rows arrive at, and ``flush`` commits what is open (the
    end of the run, an interrupt). A batch seen before (Ray retried the call that brought it) is not
    written again."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.session = sink.session()
        self.members: list[str] = []
        self.seen: set[bytes] = set()

    def add(self, rows: list[dict]) -> list[dict]:
        """Take a batch of finished rows; returns the part rows of any shard this closed."""
        ids = [self.sink.member(r) for r in rows]
        batch = bytes.fromhex(block_digest(ids))[:16]
        if not rows or batch in self.seen:
            return []
        self.sink.claim(rows)
        committed: list[dict] = []
        try:
            for row, member in zip(rows, ids):
                self.session.add(row)
                self.members.append(member)
                if self.session.due(by_time=True):
                    committed += self.flush()
        except BaseException:
            # The open shard goes, with rows of earlier batches: the run's end counts them as not
            # committed and the same command redoes them.
            self.session.abort()
            self.members = []
            raise
        self.seen.add(batch)
        return committed

    def add_table(self, table: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(self.add(table.cast(self.sink.row_schema).to_pylist()),
                                    schema=self.sink.part_schema)

    def flush(self) -> list[dict]:
        rows = self.session.commit(block_digest(self.members))
        self.members = []
        return rows

    def flush_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.flush(), schema=self.sink.part_schema)
