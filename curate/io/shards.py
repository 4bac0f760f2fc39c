"""WebDataset tar shards: written member by member into NAME.tmp, fsynced and renamed when closed (on
object storage, uploaded under NAME: the object appears when the upload closes).

Tar headers are normalised (mtime 0, uid/gid 0, mode 0444) so the same samples give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from curate.io.layout import tmp_path
from curate.io.objpath import ObjectPath, OutputPath


@dataclass(frozen=True)
class MemberLocation:
    """Where a member's data starts in the tar and how long it is (for random access)."""

    offset: int
    size: int


class _HashingFile:
    """The tar's file object: counts and hashes what is written, so closing needs no second read."""

    def __init__(self, path: OutputPath):
        # never over an existing file (object names are unique per shard number and never reused)
        self._local = not isinstance(path, ObjectPath)
        self._file = open(path, "xb") if self._local else path.open_output()
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._file.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._file.flush()

    def sync(self) -> None:
        if self._local:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class ShardWriter:
    """One tar shard. ``add`` appends a sample's members; ``close`` makes the shard visible."""

    def __init__(self, path: OutputPath):
        self.path = path
        self._tmp = path if isinstance(path, ObjectPath) else tmp_path(path)
        self._file = _HashingFile(self._tmp)
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.n_samples = 0
        self.sha256: str | None = None

    @property
    def bytes_written(self) -> int:
        return self._file.size

    def add(self, key: str, members: dict[str, bytes]) -> dict[str, MemberLocation]:
        """Append ``KEY.EXT`` members in the given order; returns where each one's data lies."""
        locations = {}
        for ext, data in members.items():
            info = tarfile.TarInfo(name=f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uname = info.gname = ""
            start = self._tar.offset
            self._tar.addfile(info, io.BytesIO(data))
            # tarfile does not record where the data went: header = what was added minus padded data.
            padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            header = self._tar.offset - start - padded
            locations[ext] = MemberLocation(offset=start + header, size=len(data))
        self.n_samples += 1
        return locations

    def close(self) -> OutputPath:
        self._tar.close()
        self._file.flush()
        self._file.sync()
        self._file.close()
        if self._tmp != self.path:
            os.replace(self._tmp, self.path)
        self.sha256 = self._file.sha256.hexdigest()
        return self.path

    def abort(self) -> None:
        """Drop the unfinished shard (nothing was visible yet)."""
        try:
            self._tar.close()
        finally:
            self._file.close()
            self._tmp.unlink(missing_ok=True)


def iter_tar_members(fileobj) -> Iterator[tuple[tarfile.TarInfo, int]]:
    """Regular-file members of a tar stream with their data offsets, without reading the data."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for info in tar:
            if info.isfile():
                yield info, info.offset_data
