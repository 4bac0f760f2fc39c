"""Filesystem access through pyarrow.fs: local paths, s3:// and gs:// URIs behave the same.

What a URI is: curate.uris. ``file://`` URIs are local paths.
"""

from __future__ import annotations

import os
import posixpath
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.fs as pafs

from curate.uris import scheme_of, storage_problem

T = TypeVar("T")


class ReadTimeout(OSError):
    """A read of one input did not finish within its time limit."""


class UnsupportedStorage(ValueError):
    """A URI whose scheme names no filesystem that pyarrow (so curate) has."""


def local_path(uri: str) -> str | None:
    """The local path that ``uri`` names (a plain path or ``file://``), or None for other schemes."""
    scheme = scheme_of(uri)
    if scheme is None:
        return uri
    if scheme == "file":
        return uri[len("file://"):]
    return None


def beside(list_uri: str, entry: str) -> str:
    """What ``entry``, a line of the list file at ``list_uri``, names: a relative path is read from
    the list's folder (local or on object storage), so a list travels with its images; an absolute
    path or a URI is kept. An entry of a list named from its own folder is kept as written."""
    if scheme_of(entry) is not None or os.path.isabs(entry):
        return entry
    folder = posixpath.dirname(list_uri)
    if not folder:
        return entry
    scheme = scheme_of(folder)
    if scheme is None:
        return posixpath.normpath(posixpath.join(folder, entry))
    head, rest = folder.split("://", 1)
    return f"{head}://{posixpath.normpath(posixpath.join(rest, entry))}"


# The driver's current folder, passed to the Ray workers of a run (curate.runner.init_ray)
DRIVER_CWD_ENV = "CURATE_DRIVER_CWD"


def driver_cwd() -> str:
    """The folder a relative local path is read from: the driver's, in the driver and in its
    workers alike (a Ray worker on another machine runs in a folder of its own)."""
    return os.environ.get(DRIVER_CWD_ENV) or os.getcwd()


def absolute(path: str) -> str:
    """A local path made absolute from the driver's folder (``driver_cwd``)."""
    return os.path.normpath(os.path.join(driver_cwd(), path))


def local_if_there(name: str) -> str:
    """A model or checkpoint as every node finds it: a relative path that exists from the driver's
    folder, made absolute; a hub id (no such folder there), a URI, an absolute path or an empty
    name as it is."""
    if not name or scheme_of(name) is not None or os.path.isabs(name):
        return name
    found = absolute(name)
    return found if os.path.exists(found) else name


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a local path or a URI with a scheme."""
    path = local_path(uri)
    if path is not None:
        return pafs.LocalFileSystem(), absolute(path)
    problem = storage_problem(uri)
    if problem:
        raise UnsupportedStorage(problem)
    return pafs.FileSystem.from_uri(uri)


def stem(uri: str) -> str:
    """The last name of a path or URI without its suffix (``s3://b/vqa/llava.json`` -> ``llava``)."""
    return Path(uri.rstrip("/").split("://")[-1]).stem


def is_local(uri: str) -> bool:
    return local_path(uri) is not None


def with_timeout(fn: Callable[[], T], seconds: float | None, what: str) -> T:
    """Run ``fn`` in a daemon thread and give up after ``seconds``: a read that hangs (a stalled
    network mount, a device) fails with ReadTimeout instead of hanging the run."""
    if not seconds:
        return fn()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True, name="curate-read")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ReadTimeout(f"{what}: no answer within {seconds:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def read_range(uri: str, offset: int, size: int, timeout: float | None = None) -> bytes:
    """Read ``size`` bytes at ``offset`` (members of tar shards)."""
    def read() -> bytes:
        fs, path = resolve(uri)
        with fs.open_input_file(path) as f:
            f.seek(offset)
            return f.read(size)

    return with_timeout(read, timeout, uri)


def read_capped(uri: str, max_bytes: int, timeout: float | None = None) -> bytes:
    """Read a whole file, but at most ``max_bytes + 1`` bytes so callers can detect oversize files."""
    def read() -> bytes:
        fs, path = resolve(uri)
        with fs.open_input_stream(path) as f:
            return f.read(max_bytes + 1)

    return with_timeout(read, timeout, uri)


def printable_path(path: str) -> str:
    """The path with bytes that are not UTF-8 shown as \\xNN (such names cannot be stored as text)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def local_file_problem(path: str) -> str | None:
    """Why a listed local file cannot be read as an image file, or None."""
    if printable_path(path) != path:
        return "file name is not valid UTF-8 (rename the file)"
    try:
        st = os.stat(absolute(path))
    except OSError as e:
        return f"cannot read {printable_path(path)}: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, socket or device would block or never end)"
    return None
