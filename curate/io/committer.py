"""The commit protocol shared by every writer of an output (corpus and canvas runs).

Committer (the driver, once per run):
  open():  claim the output (ownership marker, no overlap with inputs), take the lock, clean up what
           a killed run of ours left (only numbers an ``opened`` entry recorded), and verify every
           commit: a part that cannot be read, whose shards are missing or of another size (or hash,
           with ``verify``), or that repeats the inputs of an earlier part (a retried write task), is
           moved to ``.curate/dropped/`` with a warning and its inputs are redone.
CommitTarget (picklable: wherever shards are written, the driver or a Ray worker):
  begin(n):  the shard number's ``opened`` entry is written before any of its files.
  commit():  shards are closed (fsync + rename locally; the upload completes on object storage)
             first; the part, written last with the size and sha256 of each shard in its metadata,
             is the commit record. Numbers come from one counter per run, so a retried task never
             writes over another attempt's files.

So a SIGKILL at any point (of the driver or a worker) loses at most the open shards' work, and the
committed set is what the parts say *and* the storage still holds.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.io.layout import OutputLayout, atomic_write_bytes, number_of, tmp_path
from curate.io.lock import lock_for
from curate.io.objpath import ObjectPath, OutputPath, open_binary
from curate.io.ownership import OutputConflict, claim_output, unclaim_output
from curate.io.shards import ShardWriter

log = logging.getLogger("curate")

META_CONFIG = b"curate.config_sha256"
META_FILES = b"curate.files"
META_ROWS = b"curate.commit_sha256"
META_BLOCK = b"curate.block_sha256"


def commit_digest(table: pa.Table, config_sha256: str, files: bytes) -> str:
    """sha256 of a commit record's content (rows in a canonical form, config hash, file list):
    parquet's page checksums miss a few bytes (page headers, footer), so the part also records
    what it must read back as."""
    text = json.dumps(table.to_pylist(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(b"\0".join([text.encode(), config_sha256.encode(), files])).hexdigest()


def block_digest(identities: list[str]) -> str:
    """What a part's inputs are, independent of attempt: a write task that Ray retries after its
    first attempt committed gives the same digest, and the later part is dropped."""
    return hashlib.sha256("\n".join(sorted(identities)).encode()).hexdigest()


def file_sha256(path: OutputPath) -> str:
    digest = hashlib.sha256()
    with open_binary(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CommitTarget:
    """Where and how shards of one run are committed; small and picklable, so Ray workers write
    their own shards (nothing but the part rows goes back to the driver)."""

    root: str
    split: str
    config_sha256: str
    part_schema: pa.Schema

    @cached_property
    def layout(self) -> OutputLayout:
        return OutputLayout.at(self.root)

    def stem(self, number: int) -> str:
        return f"{self.split}-{number:06d}"

    def begin(self, number: int) -> None:
        """Record the number before any of its files exists, so cleanup knows them as ours."""
        self.layout.opened_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.layout.opened_dir / self.stem(number), b"")

    def shard_writer(self, folder: OutputPath, number: int) -> ShardWriter:
        folder.mkdir(parents=True, exist_ok=True)
        return ShardWriter(folder / f"{self.stem(number)}.tar")

    def commit(self, number: int, closed: list[ShardWriter], rows: list[dict], block: str | None = None) -> None:
        """Write shard ``number``'s part (last: it commits) naming the closed shards' sizes and hashes."""
        files = [{"name": str(w.path.relative_to(self.layout.root)), "size": w.bytes_written,
                  "sha256": w.sha256} for w in closed]
        table = pa.Table.from_pylist(rows, schema=self.part_schema)
        listed = json.dumps(files).encode()
        meta = {META_CONFIG: self.config_sha256.encode(), META_FILES: listed,
                META_ROWS: commit_digest(table, self.config_sha256, listed).encode()}
        if block is not None:
            meta[META_BLOCK] = block.encode()
        table = table.replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf, write_page_checksum=True)
        atomic_write_bytes(self.layout.part(self.split, number), buf.getvalue())


class ShardNumber:
    """A writer's open shard number: taken on first use and recorded (``begin``) before any of its
    files exists; released when that shard commits or is dropped."""

    def __init__(self, target: CommitTarget, next_number: Callable[[], int]):
        self.target, self.next_number = target, next_number
        self.value: int | None = None

    def get(self) -> int:
        if self.value is None:
            self.value = self.next_number()
            self.target.begin(self.value)
        return self.value

    def release(self) -> None:
        self.value = None


def write_in_blocks(session, rows: list[dict], member: Callable[[dict], str]) -> list[dict]:
    """Rows -> committed shards through a writer's ``session`` (add, due, commit(block), abort);
    returns the part rows. Shards split by count and size only (not time), so a write task that Ray
    retries splits the same way and each part's block digest (of ``member`` of its rows) matches
    its first attempt's: the later copy is dropped when the run finishes."""
    committed: list[dict] = []
    members: list[str] = []
    try:
        for row in rows:
            session.add(row)
            members.append(member(row))
            if session.due(by_time=False):
                committed += session.commit(block_digest(members))
                members = []
        committed += session.commit(block_digest(members))
    except BaseException:
        session.abort()
        raise
    return committed


class Committer:
    """The driver's side: claim, lock, clean, verify, hand out shard numbers, release."""

    def __init__(self, root: str | Path, kind: str, config_sha256: str, split: str, part_schema: pa.Schema,
                 input_paths: list[str], verify: bool = False):
        self.layout = OutputLayout.at(root if isinstance(root, (Path, ObjectPath)) else str(root))
        self.target = CommitTarget(str(self.layout.root), split, config_sha256, part_schema)
        self.claimed_empty = False  # this run claimed a new or empty directory
        self.committed_any = False  # a commit exists (earlier or in this run)
        self.kind = kind
        self.config_sha256 = config_sha256
        self.split = split
        self.part_schema = part_schema
        self.input_paths = input_paths
        self.verify = verify
        self.lock = lock_for(self.layout.lock)
        self.notes: list[str] = []  # what resume found and did, for the user
        self.next_number = 0
        self._numbers: itertools.count | None = None

    # ------------------------------------------------------------ open / resume

    def open(self, on_part: Callable[[pa.Table], None] | None = None) -> list[pa.Table]:
        """Claim, lock, clean up and verify. Each committed part's table goes to ``on_part`` (oldest
        first, one at a time, so a resume over millions of rows keeps little in memory); without
        ``on_part`` they are returned."""
        kept: list[pa.Table] = []
        created_root = not self.layout.root.exists()
        _, self.claimed_empty = claim_output(self.layout, self.kind, self.config_sha256, self.input_paths)
        self._created_root = created_root
        self.lock.acquire()
        try:
            self.layout.make_dirs()
            committed = self.verify_parts(on_part or kept.append)
            self.committed_any = bool(committed)
            self.clean_uncommitted(committed)
            self.next_number = self._first_free_number()
            self._numbers = itertools.count(self.next_number)
        except BaseException:
            self.lock.release()
            raise
        return kept

    def _stem(self, path: OutputPath) -> str:
        return path.name.split(".", 1)[0]

    def verify_parts(self, on_part: Callable[[pa.Table], None]) -> set[str]:
        """Check every part (dropping the failed ones); returns the committed stems."""
        sizes = {folder: _sizes(folder) for folder in (self.layout.shards_dir, self.layout.questions_dir)}
        blocks: dict[str, str] = {}
        committed: set[str] = set()
        for part in self.layout.part_files():
            problem, table, block = self._check_part(part, sizes)
            if problem is None and block is not None and block in blocks:
                problem = (f"it holds the same inputs as commit {blocks[block]} (a write that Ray retried after "
                           "its first attempt had committed)")
            if problem is not None:
                self._drop(part, problem)
                continue
            if block is not None:
                blocks[block] = self._stem(part)
            committed.add(self._stem(part))
            on_part(table)
        return committed

    def _check_part(self, part: OutputPath,
                    sizes: dict | None = None) -> tuple[str | None, pa.Table | None, str | None]:
        try:
            with open_binary(part) as f:
                parquet = pq.ParquetFile(f, page_checksum_verification=True)
                meta = parquet.schema_arrow.metadata or {}
                table = parquet.read().cast(self.part_schema)
            digest = meta[META_ROWS].decode() if META_ROWS in meta else None
            recorded = meta[META_CONFIG].decode() if META_CONFIG in meta else None
            if digest is not None and commit_digest(table, recorded or "", meta.get(META_FILES, b"")) != digest:
                return "commit record damaged (its content does not match its recorded sha256)", None, None
            files = json.loads(meta[META_FILES]) if META_FILES in meta else self._legacy_files(table)
            if not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in files):
                raise ValueError("malformed file list")
        except Exception as e:  # truncated, zeroed, bit-flipped or foreign: pyarrow raises many kinds
            return f"commit record unreadable ({type(e).__name__}: {e})", None, None
        if recorded is not None and recorded != self.config_sha256:
            raise OutputConflict(
                f"{part}: written by config {recorded[:12]}; this config is "
                f"{self.config_sha256[:12]}. Use another --output, or delete the directory to start over.")
        for entry in files:
            path = self.layout.root / entry["name"]
            folder, name = entry["name"].rsplit("/", 1) if "/" in entry["name"] else ("", entry["name"])
            listed = sizes.get(self.layout.root / folder) if folder and sizes else None
            size = listed.get(name) if listed is not None else (path.stat().st_size if path.is_file() else None)
            if size is None:
                return f"{entry['name']} is missing", None, None
            if entry.get("size") is not None and size != entry["size"]:
                return f"{entry['name']} has {size} bytes, the commit recorded {entry['size']}", None, None
            if self.verify and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
                return f"{entry['name']} does not match its recorded sha256", None, None
        block = meta[META_BLOCK].decode() if META_BLOCK in meta else None
        return None, table, block

    def _legacy_files(self, table: pa.Table) -> list[dict]:
        """Parts written before commit metadata existed name their shard in the rows only."""
        names = {s for s in table.column("shard").to_pylist() if s} if "shard" in table.column_names else set()
        return [{"name": f"shards/{name}"} for name in sorted(names)]

    def _drop(self, part: OutputPath, problem: str) -> None:
        """Move a failed commit (its part and its numbered shards) aside; its inputs are redone."""
        stem = self._stem(part)
        dropped = self.layout.dropped_dir / time.strftime("%Y%m%dT%H%M%S")
        dropped.mkdir(parents=True, exist_ok=True)
        for path in (part, self.layout.shards_dir / f"{stem}.tar", self.layout.questions_dir / f"{stem}.tar"):
            if path.exists():
                path.replace(dropped / f"{path.parent.name}-{path.name}")
        note = (f"commit {stem} dropped: {problem}; its inputs are redone "
                f"(the files were moved to {dropped.relative_to(self.layout.root)})")
        log.warning("%s: %s", self.layout.root, note)
        self.notes.append(note)

    def _opened_stems(self) -> list[str]:
        stems = [p.name for p in self.layout.opened_dir.iterdir()] if self.layout.opened_dir.exists() else []
        try:  # the single journal file of earlier versions
            stems += [line.strip() for line in self.layout.journal.read_text().splitlines() if line.strip()]
        except (FileNotFoundError, NotADirectoryError):
            pass
        return stems

    def clean_uncommitted(self, committed: set[str]) -> None:
        """Delete what a killed run of ours left: only numbers an ``opened`` entry recorded."""
        for stem in self._opened_stems():
            if stem in committed:
                continue
            shard, questions = self.layout.shards_dir / f"{stem}.tar", self.layout.questions_dir / f"{stem}.tar"
            for path in (shard, tmp_path(shard), questions, tmp_path(questions),
                         tmp_path(self.layout.parts_dir / f"{stem}.parquet")):
                path.unlink(missing_ok=True)
        # Committed numbers are kept by their parts, cleaned ones are gone: the entries are done.
        for stem in self._opened_stems():
            (self.layout.opened_dir / stem).unlink(missing_ok=True)
        self.layout.journal.unlink(missing_ok=True)

    def _first_free_number(self) -> int:
        """One past every number in use (committed, opened, or a file we did not write)."""
        numbers = [number_of(p) for p in self.layout.numbered_files()]
        numbers += [number_of(Path(f"{s}.tar")) for s in self._opened_stems()]
        return max(numbers) + 1 if numbers else 0

    def take_number(self) -> int:
        """A fresh shard number (in this process; Ray workers get theirs from an actor seeded with
        ``next_number``)."""
        return next(self._numbers)

    def close(self, failed: bool = False) -> None:
        """Release the output; after a failure that committed nothing in a directory this run
        claimed, give the directory back as it was."""
        self.lock.release()
        if failed and self.claimed_empty and not self.committed_any:
            unclaim_output(self.layout, self._created_root)


def _sizes(folder: OutputPath) -> dict[str, int]:
    """name -> size of the files in ``folder``: one listing call (one request on object storage)."""
    if isinstance(folder, ObjectPath):
        return folder.sizes()
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
