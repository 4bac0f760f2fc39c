"""A small pathlib-like view of object storage (``s3://``, ``gs://``, anything pyarrow.fs opens), so
an output's layout code reads the same for a local directory and a bucket prefix.

Object stores have no directories and no rename: a folder exists when something lies under it,
``mkdir`` does nothing, and a file appears whole when its upload closes (a single PUT, or a
multipart upload completed at close). Credentials and endpoints come from the usual environment
variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, ...) or from the
URI's query (``s3://bucket/out?endpoint_override=host:9000``), as for sources.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow.fs as pafs

from curate.io.fs import absolute, local_path, resolve


@dataclass(frozen=True)
class StatResult:
    st_size: int


class ObjectPath:
    """``scheme://bucket/key`` with the pathlib calls curate's output code uses."""

    def __init__(self, uri: str, _fs: pafs.FileSystem | None = None, _path: str | None = None):
        base, _, self._query = uri.partition("?")
        self._base = base.rstrip("/")
        if _fs is None:
            _fs, _path = resolve(uri)
        self._fs = _fs
        self._path = _path.rstrip("/")

    # ------------------------------------------------------------ names

    def _with_base(self, base: str, path: str) -> ObjectPath:
        return ObjectPath(base + (f"?{self._query}" if self._query else ""), self._fs, path)

    def __truediv__(self, name: str) -> ObjectPath:
        name = str(name).strip("/")
        return self._with_base(f"{self._base}/{name}", f"{self._path}/{name}")

    def __str__(self) -> str:
        """The URI (with its query, so that ``str(path)`` opens the same store again)."""
        return self._base + (f"?{self._query}" if self._query else "")

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    def __fspath__(self) -> str:
        raise TypeError(f"{self}: an object-storage path has no local file name")

    @property
    def name(self) -> str:
        return posixpath.basename(self._path)

    @property
    def parent(self) -> ObjectPath:
        parent = posixpath.dirname(self._path)
        return self._with_base(self._base.rsplit("/", 1)[0], parent)

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def relative_to(self, other: ObjectPath) -> Path:
        prefix = other._path.rstrip("/") + "/"
        if not self._path.startswith(prefix):
            raise ValueError(f"{self} is not under {other}")
        return Path(self._path[len(prefix):])

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._fs

    @property
    def fs_path(self) -> str:
        return self._path

    # ------------------------------------------------------------ queries

    def _info(self) -> pafs.FileInfo:
        return self._fs.get_file_info(self._path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def stat(self) -> StatResult:
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        return StatResult(st_size=info.size or 0)

    def iterdir(self) -> Iterator[ObjectPath]:
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(self._path, recursive=False))
        except FileNotFoundError:
            return iter(())
        return iter(sorted((self / posixpath.basename(i.path) for i in infos), key=str))

    def sizes(self) -> dict[str, int]:
        """name -> size of every file directly in this folder, in one listing call."""
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(self._path, recursive=False, allow_not_found=True))
        except FileNotFoundError:
            return {}
        return {posixpath.basename(i.path): i.size or 0 for i in infos if i.type == pafs.FileType.File}

    # ------------------------------------------------------------ reading and writing

    def read_bytes(self) -> bytes:
        try:
            with self._fs.open_input_stream(self._path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as e:
            if self._info().type == pafs.FileType.NotFound:
                raise FileNotFoundError(str(self)) from e
            raise

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def open_input(self):
        """A seekable pyarrow file (parquet footers, tar members by offset)."""
        return self._fs.open_input_file(self._path)

    def open_stream(self, buffer_size: int = 8 << 20):
        """A forward-only reader with large buffered reads (a stream of tar members): without the
        buffer each small read would be one ranged request to the store."""
        return self._fs.open_input_stream(self._path, compression=None, buffer_size=buffer_size)

    def open_output(self) -> IO[bytes]:
        """A write stream; the object appears (whole) when it is closed."""
        return self._fs.open_output_stream(self._path)

    def write_bytes(self, data: bytes) -> None:
        with self.open_output() as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self._fs.delete_file(self._path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        except OSError:
            if not missing_ok or self.exists():
                raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Folders are implied by the objects under them."""

    def rmdir(self) -> None:
        if any(True for _ in self.iterdir()):
            raise OSError(f"{self}: not empty")

    def replace(self, target: ObjectPath) -> ObjectPath:
        """Copy then delete: object stores have no rename (only used to set failed commits aside)."""
        self._fs.copy_file(self._path, target._path)
        self._fs.delete_file(self._path)
        return target


OutputPath = Path | ObjectPath


def output_path(uri: str | Path) -> OutputPath:
    """A local Path for a local directory (or ``file://``), else an ObjectPath."""
    if isinstance(uri, (Path, ObjectPath)):
        return uri
    local = local_path(uri)
    return Path(absolute(local)) if local is not None else ObjectPath(uri)


def open_binary(path: OutputPath):
    """A seekable binary file for reading, local or remote."""
    return path.open_input() if isinstance(path, ObjectPath) else open(path, "rb")


def open_sequential(path: OutputPath):
    """A binary file read from start to end (tar shards streamed member by member), local or remote."""
    return path.open_stream() if isinstance(path, ObjectPath) else open(path, "rb", buffering=1 << 20)


def read_slice(path: OutputPath, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of a local or remote file (a tar member by its index offsets)."""
    with open_binary(path) as f:
        f.seek(offset)
        return f.read(size)


def read_parquet(path: OutputPath, **kwargs):
    """pq.read_table on a file opened by us: pyarrow would parse ``run-12:00/x.parquet`` as a URI, and
    an ObjectPath keeps its own filesystem (endpoint, credentials)."""
    import pyarrow.parquet as pq

    with open_binary(path) as f:
        return pq.read_table(f, **kwargs)


def read_parquet_schema(path: OutputPath):
    import pyarrow.parquet as pq

    with open_binary(path) as f:
        return pq.read_schema(f)


def glob_objects(pattern: str) -> list[str]:
    """The URIs that match a glob such as ``s3://bucket/out/shards/*.tar`` (sorted), listed under the
    longest prefix without a wildcard."""
    base, _, query = pattern.partition("?")
    parts = base.split("/")
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
    if fixed == len(parts):
        path = ObjectPath(pattern)
        return [pattern] if path.is_file() else []
    root = ObjectPath("/".join(parts[:fixed]) + (f"?{query}" if query else ""))
    recursive = fixed < len(parts) - 1 or "**" in parts[fixed]
    try:
        infos = root.filesystem.get_file_info(pafs.FileSelector(root.fs_path, recursive=recursive))
    except FileNotFoundError:
        return []
    rest = "/".join(parts[fixed:])
    found = []
    for info in infos:
        name = info.path[len(root.fs_path):].lstrip("/")
        if info.type == pafs.FileType.File and fnmatch.fnmatchcase(name, rest):
            found.append(str(root / name))
    return sorted(found)
