"""The one place that knows an output directory's file layout.

OUT/shards/{split}-{n:06d}.tar    WebDataset shards (KEY.jpg|png|webp + KEY.json)
OUT/questions/{split}-{n:06d}.tar questions retargeted from shard n's captions (KEY_i.json [+ image])
OUT/parts/{split}-{n:06d}.parquet per-shard commit record: one row per input (written or quarantined)
OUT/index.parquet                 one row per written sample, built from the parts at the end of a run
OUT/manifest.json                 config, versions, counts, timings, quarantine list
Files are written as NAME.tmp and renamed: a reader never sees a partial file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

TMP_SUFFIX = ".tmp"
_NUMBERED = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<n>\d{6})\.(?:tar|parquet)$")


@dataclass(frozen=True)
class OutputLayout:
    root: Path

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
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def stats_dir(self) -> Path:
        return self.root / "stats"

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

    def remove_uncommitted(self) -> None:
        """Resume step of the commit protocol: drop temp files, and shards whose part never landed
        (renamed before a kill): their inputs are redone."""
        for folder in (self.shards_dir, self.questions_dir, self.parts_dir):
            if folder.exists():
                for tmp in folder.glob(f"*{TMP_SUFFIX}"):
                    tmp.unlink()
        committed = {p.stem for p in self.part_files()}
        for shard in self.shard_files() + self.question_shard_files():
            if shard.stem not in committed:
                shard.unlink()

    def next_shard_number(self) -> int:
        numbers = [number_of(p) for p in self.part_files()]
        return max(numbers) + 1 if numbers else 0


def _numbered(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if _NUMBERED.match(p.name))


def number_of(path: Path) -> int:
    m = _NUMBERED.match(path.name)
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
