"""Filesystem access through pyarrow.fs: local paths, s3:// and gs:// URIs behave the same."""

from __future__ import annotations

import os

import pyarrow.fs as pafs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a local path or a URI with a scheme."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def read_range(uri: str, offset: int, size: int) -> bytes:
    """Read ``size`` bytes at ``offset`` (members of tar shards)."""
    fs, path = resolve(uri)
    with fs.open_input_file(path) as f:
        f.seek(offset)
        return f.read(size)


def read_capped(uri: str, max_bytes: int) -> bytes:
    """Read a whole file, but at most ``max_bytes + 1`` bytes so callers can detect oversize files."""
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read(max_bytes + 1)
