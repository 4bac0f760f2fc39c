"""The one place that knows an output directory's file layout.

OUT/shards/{split}-{n:06d}.tar    WebDataset shards (KEY.jpg|png|webp + KEY.json)
OUT/questions/{split}-{n:06d}.tar questions retargeted from shard n's captions (KEY_i.json [+ image])
OUT/parts/{split}-{n:06d}.parquet per-shard commit record: one row per input (written or quarantined)
OUT/index.parquet                 one row per written sample, built from the parts at the end of a run
OUT/quarantine.parquet            one row per quarantined input (uri, dataset, reason, detail), same time
OUT/manifest.json                 config, versions, counts, timings, quarantine summary (list when complete)
OUT/.curate/output.json           ownership marker: curate writes only into directories that carry it
OUT/.curate/lock                  one writer at a time (curate/io/lock.py)
OUT/.curate/opened/{split}-{n}    one empty entry per shard number a writer opened, made before its files,
                                  so cleanup touches only our own files (``.curate/journal``: the same, older)
OUT/.curate/dropped/              committed files that failed verification on resume, kept for a look
Local files are written as NAME.tmp and renamed; on object storage an object appears whole when its
upload closes. Either way a reader never sees a partial file. OUT is a local directory or a URI
(curate/io/objpath.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from curate.io.objpath import ObjectPath, OutputPath, output_path

TMP_SUFFIX = ".tmp"
_NUMBERED = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<n>\d{6})\.(?:tar|parquet)$")
_NUMBERED_OR_TMP = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<n>\d{6})\.(?:tar|parquet)(?:\.tmp)?$")


@dataclass(frozen=True)
class OutputLayout:
    root: OutputPath

    def __post_init__(self) -> None:
        if isinstance(self.root, str):  # a local path or a URI
            object.__setattr__(self, "root", output_path(self.root))

    @classmethod
    def at(cls, uri: str | OutputPath) -> OutputLayout:
        """The layout of the output at a local path or URI."""
        return cls(output_path(uri))

    @property
    def remote(self) -> bool:
        return isinstance(self.root, ObjectPath)

    @classmethod
    def of_shard(cls, shard: OutputPath) -> OutputLayout:
        """The output that holds ``shard`` (a file in shards/ or questions/)."""
        return cls(shard.parent.parent)

    @property
    def shards_dir(self) -> OutputPath:
        return self.root / "shards"

    @property
    def questions_dir(self) -> OutputPath:
        return self.root / "questions"

    @property
    def parts_dir(self) -> OutputPath:
        return self.root / "parts"

    @property
    def index(self) -> OutputPath:
        return self.root / "index.parquet"

    @property
    def quarantine(self) -> OutputPath:
        return self.root / "quarantine.parquet"

    @property
    def manifest(self) -> OutputPath:
        return self.root / "manifest.json"

    @property
    def stats_dir(self) -> OutputPath:
        return self.root / "stats"

    @property
    def meta_dir(self) -> OutputPath:
        return self.root / ".curate"

    @property
    def marker(self) -> OutputPath:
        return self.meta_dir / "output.json"

    @property
    def lock(self) -> OutputPath:
        return self.meta_dir / "lock"

    @property
    def journal(self) -> OutputPath:
        """The single journal file of earlier versions (read on cleanup, no longer written)."""
        return self.meta_dir / "journal"

    @property
    def opened_dir(self) -> OutputPath:
        return self.meta_dir / "opened"

    @property
    def dropped_dir(self) -> OutputPath:
        return self.meta_dir / "dropped"

    def shard(self, split: str, n: int) -> OutputPath:
        return self.shards_dir / f"{split}-{n:06d}.tar"

    def question_shard(self, split: str, n: int) -> OutputPath:
        return self.questions_dir / f"{split}-{n:06d}.tar"

    def part(self, split: str, n: int) -> OutputPath:
        return self.parts_dir / f"{split}-{n:06d}.parquet"

    def make_dirs(self) -> None:
        for folder in (self.shards_dir, self.parts_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def part_files(self) -> list[OutputPath]:
        if not self.parts_dir.exists():
            return []
        return sorted(p for p in self.parts_dir.iterdir() if _NUMBERED.match(p.name))

    def shard_files(self) -> list[OutputPath]:
        return _numbered(self.shards_dir)

    def question_shard_files(self) -> list[OutputPath]:
        return _numbered(self.questions_dir)

    def numbered_files(self) -> list[OutputPath]:
        """Every shard, question shard and part file, committed or not, temp files included."""
        return [p for folder in (self.shards_dir, self.questions_dir, self.parts_dir) if folder.exists()
                for p in sorted(folder.iterdir()) if _NUMBERED_OR_TMP.match(p.name)]


def _numbered(folder: OutputPath) -> list[OutputPath]:
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if _NUMBERED.match(p.name))


def number_of(path: OutputPath) -> int:
    m = _NUMBERED_OR_TMP.match(path.name)
    if not m:
        raise ValueError(f"{path}: not a numbered shard or part file")
    return int(m.group("n"))


def tmp_path(path: OutputPath) -> OutputPath:
    return path.with_name(path.name + TMP_SUFFIX)


def atomic_write_bytes(path: OutputPath, data: bytes) -> None:
    """Write then rename, with fsync, so the file appears whole or not at all (an object upload is
    all-or-nothing by itself)."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_writer(path: OutputPath) -> Iterator[IO[bytes]]:
    """A file to stream into that appears whole at ``path`` when the block ends without error."""
    if isinstance(path, ObjectPath):
        with path.open_output() as f:
            yield f
        return
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
