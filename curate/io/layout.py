"""The one place that knows an output directory's file layout.

OUT/shards/{split}-{n:06d}.tar    WebDataset shards (KEY.jpg|png|webp + KEY.json)
OUT/questions/{split}-{n:06d}.tar questions retargeted from shard n's captions (KEY_i.json [+ image])
OUT/parts/{split}-{n:06d}.parquet per-shard commit record: one row per input (written or quarantined)
OUT/index.parquet                 one row per written sample, built from the parts at the end of a run
OUT/quarantine.parquet            one row per quarantined input (uri, dataset, reason, detail), same time
OUT/manifest.json                 config, versions, counts, timings, quarantine summary (list when complete)
OUT/.curate/output.json           ownership marker: curate writes only into directories that carry it
OUT/.curate/lock                  one writer at a time (curate/io/lock.py)
OUT/.curate/journal               every shard name a run opened, so cleanup touches only our own files
OUT/.curate/dropped/              committed files that failed verification on resume, kept for a look
Files are written as NAME.tmp and renamed: a reader never sees a partial file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

TMP_SUFFIX = ".tmp"
_NUMBERED = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<n>\d{6})\.(?:tar|parquet)$")
_NUMBERED_OR_TMP = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<n>\d{6})\.(?:tar|parquet)(?:\.tmp)?$")


@dataclass(frozen=True)
class OutputLayout:
    root: Path

    @classmethod
    def of_shard(cls, shard: Path) -> OutputLayout:
        """The output that holds ``shard`` (a file in shards/ or questions/)."""
        return cls(shard.parent.parent)

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def questions_dir(self) -> Path:
        return self.root / "questions"

    @property
    def parts_dir(self) -> Path:
        return self.root / "parts"

    @property
    def index(self) -> Path:
        return self.root / "index.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def stats_dir(self) -> Path:
        return self.root / "stats"

    @property
    def meta_dir(self) -> Path:
        return self.root / ".curate"

    @property
    def marker(self) -> Path:
        return self.meta_dir / "output.json"

    @property
    def lock(self) -> Path:
        return self.meta_dir / "lock"

    @property
    def journal(self) -> Path:
        return self.meta_dir / "journal"

    @property
    def dropped_dir(self) -> Path:
        return self.meta_dir / "dropped"

    def shard(self, split: str, n: int) -> Path:
        return self.shards_dir / f"{split}-{n:06d}.tar"

    def question_shard(self, split: str, n: int) -> Path:
        return self.questions_dir / f"{split}-{n:06d}.tar"

    def part(self, split: str, n: int) -> Path:
        return self.parts_dir / f"{split}-{n:06d}.parquet"

    def make_dirs(self) -> None:
        for folder in (self.shards_dir, self.parts_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def part_files(self) -> list[Path]:
        if not self.parts_dir.exists():
            return []
        return sorted(p for p in self.parts_dir.iterdir() if _NUMBERED.match(p.name))

    def shard_files(self) -> list[Path]:
        return _numbered(self.shards_dir)

    def question_shard_files(self) -> list[Path]:
        return _numbered(self.questions_dir)

    def numbered_files(self) -> list[Path]:
        """Every shard, question shard and part file, committed or not, temp files included."""
        return [p for folder in (self.shards_dir, self.questions_dir, self.parts_dir) if folder.exists()
                for p in sorted(folder.iterdir()) if _NUMBERED_OR_TMP.match(p.name)]


def _numbered(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if _NUMBERED.match(p.name))


def number_of(path: Path) -> int:
    m = _NUMBERED_OR_TMP.match(path.name)
    if not m:
        raise ValueError(f"{path}: not a numbered shard or part file")
    return int(m.group("n"))


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write then rename, with fsync, so the file appears whole or not at all."""
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
