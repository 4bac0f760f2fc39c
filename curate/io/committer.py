"""The commit protocol shared by every writer of an output (corpus and canvas runs).

open():   claim the directory (ownership marker, no overlap with inputs), take the lock, clean up
          what a killed run of ours left (only names the journal recorded), and verify every commit:
          a part that cannot be read, or whose shards are missing or of another size (or hash,
          with ``verify``), is moved to ``.curate/dropped/`` with a warning and its inputs are redone.
shard_writer(): the open shard number is recorded in the journal before any of its files is created.
commit(): shards are closed (fsync + rename) first; the part, written last with the size and
          sha256 of each shard in its metadata, is the commit record.

So a SIGKILL at any point loses at most the open shard's work, and the committed set is what the
parts say *and* the disk still holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.io.fs import local_path
from curate.io.layout import OutputLayout, atomic_write_bytes, number_of, tmp_path
from curate.io.lock import OutputLock
from curate.io.ownership import OutputConflict, OutputRefused, claim_output, unclaim_output
from curate.io.shards import ShardWriter

log = logging.getLogger("curate")

META_CONFIG = b"curate.config_sha256"
META_FILES = b"curate.files"
META_ROWS = b"curate.commit_sha256"


def commit_digest(table: pa.Table, config_sha256: str, files: bytes) -> str:
    """sha256 of a commit record's content (rows in a canonical form, config hash, file list):
    parquet's page checksums miss a few bytes (page headers, footer), so the part also records
    what it must read back as."""
    text = json.dumps(table.to_pylist(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(b"\0".join([text.encode(), config_sha256.encode(), files])).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Committer:
    def __init__(self, root: str | Path, kind: str, config_sha256: str, split: str, part_schema: pa.Schema,
                 input_paths: list[str], verify: bool = False):
        local = local_path(str(root))
        if local is None:
            raise OutputRefused(f"{root}: only local outputs are supported yet")
        self.layout = OutputLayout(Path(local))
        self.claimed_empty = False  # this run claimed a new or empty directory
        self.committed_any = False  # a commit exists (earlier or in this run)
        self.kind = kind
        self.config_sha256 = config_sha256
        self.split = split
        self.part_schema = part_schema
        self.input_paths = input_paths
        self.verify = verify
        self.lock = OutputLock(self.layout.lock)
        self.notes: list[str] = []  # what resume found and did, for the user
        self.next_number = 0
        self._open_number: int | None = None  # the shard number being written, journalled, not committed
        self._journal = None

    # ------------------------------------------------------------ open / resume

    def open(self) -> list[pa.Table]:
        """Claim, lock, clean up and verify; returns the committed parts' tables, oldest first."""
        created_root = not self.layout.root.exists()
        _, self.claimed_empty = claim_output(self.layout, self.kind, self.config_sha256, self.input_paths)
        self._created_root = created_root
        self.lock.acquire()
        try:
            self.layout.make_dirs()
            parts = self._verified_parts()
            self.committed_any = bool(parts)
            self._clean_uncommitted({self._stem(p) for p, _ in parts})
            self.next_number = self._first_free_number()
            self._journal = open(self.layout.journal, "a")
        except BaseException:
            self.lock.release()
            raise
        return [table for _, table in parts]

    def _stem(self, path: Path) -> str:
        return path.name.split(".", 1)[0]

    def _verified_parts(self) -> list[tuple[Path, pa.Table]]:
        good = []
        for part in self.layout.part_files():
            problem, table = self._check_part(part)
            if problem is None:
                good.append((part, table))
            else:
                self._drop(part, problem)
        return good

    def _check_part(self, part: Path) -> tuple[str | None, pa.Table | None]:
        try:
            with open(part, "rb") as f:
                parquet = pq.ParquetFile(f, page_checksum_verification=True)
                meta = parquet.schema_arrow.metadata or {}
                table = parquet.read().cast(self.part_schema)
            digest = meta[META_ROWS].decode() if META_ROWS in meta else None
            recorded = meta[META_CONFIG].decode() if META_CONFIG in meta else None
            if digest is not None and commit_digest(table, recorded or "", meta.get(META_FILES, b"")) != digest:
                return "commit record damaged (its content does not match its recorded sha256)", None
            files = json.loads(meta[META_FILES]) if META_FILES in meta else self._legacy_files(table)
            if not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in files):
                raise ValueError("malformed file list")
        except Exception as e:  # truncated, zeroed, bit-flipped or foreign: pyarrow raises many kinds
            return f"commit record unreadable ({type(e).__name__}: {e})", None
        if recorded is not None and recorded != self.config_sha256:
            raise OutputConflict(
                f"{part}: written by config {recorded[:12]}; this config is "
                f"{self.config_sha256[:12]}. Use another --output, or delete the directory to start over.")
        for entry in files:
            path = self.layout.root / entry["name"]
            if not path.is_file():
                return f"{entry['name']} is missing", None
            if entry.get("size") is not None and path.stat().st_size != entry["size"]:
                return f"{entry['name']} has {path.stat().st_size} bytes, the commit recorded {entry['size']}", None
            if self.verify and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
                return f"{entry['name']} does not match its recorded sha256", None
        return None, table

    def _legacy_files(self, table: pa.Table) -> list[dict]:
        """Parts written before commit metadata existed name their shard in the rows only."""
        names = {s for s in table.column("shard").to_pylist() if s} if "shard" in table.column_names else set()
        return [{"name": f"shards/{name}"} for name in sorted(names)]

    def _drop(self, part: Path, problem: str) -> None:
        """Move a failed commit (its part and its numbered shards) aside; its inputs are redone."""
        stem = self._stem(part)
        dropped = self.layout.dropped_dir / time.strftime("%Y%m%dT%H%M%S")
        dropped.mkdir(parents=True, exist_ok=True)
        for path in (part, self.layout.shards_dir / f"{stem}.tar", self.layout.questions_dir / f"{stem}.tar"):
            if path.exists():
                os.replace(path, dropped / f"{path.parent.name}-{path.name}")
        note = (f"commit {stem} dropped: {problem}; its inputs are redone "
                f"(the files were moved to {dropped.relative_to(self.layout.root)})")
        log.warning("%s: %s", self.layout.root, note)
        self.notes.append(note)

    def _journal_stems(self) -> list[str]:
        try:
            return [line.strip() for line in self.layout.journal.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def _clean_uncommitted(self, committed: set[str]) -> None:
        """Delete what a killed run of ours left: only names its journal recorded."""
        for stem in self._journal_stems():
            if stem in committed:
                continue
            shard, questions = self.layout.shards_dir / f"{stem}.tar", self.layout.questions_dir / f"{stem}.tar"
            for path in (shard, tmp_path(shard), questions, tmp_path(questions),
                         tmp_path(self.layout.parts_dir / f"{stem}.parquet")):
                path.unlink(missing_ok=True)
        atomic_write_bytes(self.layout.journal, "".join(f"{s}\n" for s in sorted(committed)).encode())

    def _first_free_number(self) -> int:
        """One past every number in use (committed, journalled, or a file we did not write)."""
        numbers = [number_of(p) for p in self.layout.numbered_files()]
        numbers += [number_of(Path(f"{s}.tar")) for s in self._journal_stems()]
        return max(numbers) + 1 if numbers else 0

    # ------------------------------------------------------------ writing

    def _current_number(self) -> int:
        """The open shard number; a new one is journalled before any of its files exists."""
        if self._open_number is None:
            self._open_number = self.next_number
            self.next_number += 1
            self._journal.write(f"{self.split}-{self._open_number:06d}\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
        return self._open_number

    def shard_writer(self, folder: Path) -> ShardWriter:
        """A writer for the open shard number's tar in ``folder`` (shards/ or questions/)."""
        folder.mkdir(parents=True, exist_ok=True)
        return ShardWriter(folder / f"{self.split}-{self._current_number():06d}.tar")

    def commit(self, closed: list[ShardWriter], rows: list[dict]) -> None:
        """Write the open number's part (last: it commits) naming the closed shards' sizes and hashes;
        the next shard gets a new number."""
        number = self._current_number()
        files = [{"name": str(w.path.relative_to(self.layout.root)), "size": w.path.stat().st_size,
                  "sha256": w.sha256} for w in closed]
        table = pa.Table.from_pylist(rows, schema=self.part_schema)
        listed = json.dumps(files).encode()
        table = table.replace_schema_metadata({
            META_CONFIG: self.config_sha256.encode(), META_FILES: listed,
            META_ROWS: commit_digest(table, self.config_sha256, listed).encode()})
        buf = io.BytesIO()
        pq.write_table(table, buf, write_page_checksum=True)
        atomic_write_bytes(self.layout.part(self.split, number), buf.getvalue())
        self._open_number = None
        self.committed_any = True

    def close(self, failed: bool = False) -> None:
        """Release the output; after a failure that committed nothing in a directory this run
        claimed, give the directory back as it was."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.lock.release()
        if failed and self.claimed_empty and not self.committed_any:
            unclaim_output(self.layout, self._created_root)
