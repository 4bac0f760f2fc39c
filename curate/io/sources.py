"""List the inputs of every configured source, in a stable order.

Listing runs on the driver and yields one row per input (see curate/stages/rows.py). Paths that
cannot be listed (unreadable directories, symlink loops, broken links) become quarantined rows:
an input that was seen is always accounted for.
"""

from __future__ import annotations

import glob as globlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate.config import SourceConfig
from curate.io import fs
from curate.io.shards import iter_tar_members
from curate.records import QuarantineReason
from curate.stages.rows import new_row, quarantine

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


class SourceError(ValueError):
    """A source that cannot be listed at all (missing path, wrong file type)."""


def dataset_name(src: SourceConfig) -> str:
    if src.dataset:
        return src.dataset
    return Path(src.path.rstrip("/").split("://")[-1]).stem or "images"


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def printable_path(path: str) -> str:
    """The path with bytes that are not UTF-8 shown as \\xNN (such names cannot be stored as text)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def local_file_problem(path: str) -> str | None:
    """Why a listed local file cannot be read as an image file, or None."""
    if printable_path(path) != path:
        return "file name is not valid UTF-8 (rename the file)"
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot read {printable_path(path)}: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, socket or device would block or never end)"
    return None


def _local_dir(root: str) -> Iterator[tuple[str, str | None]]:
    """(path, error) pairs below a local directory; symlinked directories are not followed."""
    errors: list[OSError] = []
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if is_image_name(name):
                found.append(os.path.join(dirpath, name))
    for path in found:
        yield path, local_file_problem(path)
    for err in errors:
        yield (err.filename or root), f"cannot list directory: {err.strerror or err}"


def _remote_dir(uri: str) -> Iterator[tuple[str, str | None]]:
    filesystem, path = fs.resolve(uri)
    scheme = uri.split("://", 1)[0]
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    for info in sorted(infos, key=lambda i: i.path):
        if info.type == pafs.FileType.File and is_image_name(info.path):
            yield f"{scheme}://{info.path}", None


def _list_file(src: SourceConfig) -> Iterator[tuple[str, str | None]]:
    if src.path.endswith(".parquet"):
        filesystem, path = fs.resolve(src.path)
        table = pq.read_table(path, filesystem=filesystem)
        if src.column not in table.column_names:
            raise SourceError(f"{src.path}: no column {src.column!r} (columns: {', '.join(table.column_names)})")
        captions = table[src.caption_column].to_pylist() if src.caption_column else None
        for i, uri in enumerate(table[src.column].to_pylist()):
            yield (uri, captions[i] if captions else None)
        return
    filesystem, path = fs.resolve(src.path)
    with filesystem.open_input_stream(path) as f:
        for line in f.read().decode("utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                yield line.strip(), None


def _tar_members(src: SourceConfig, dataset: str) -> Iterator[dict]:
    paths = sorted(globlib.glob(src.path)) if fs.is_local(src.path) else [src.path]
    if not paths:
        raise SourceError(f"{src.path}: no tar shards match")
    for tar_uri in paths:
        filesystem, path = fs.resolve(tar_uri)
        with filesystem.open_input_stream(path) as stream:
            seen_keys = set()
            for info, offset in iter_tar_members(stream):
                if not is_image_name(info.name):
                    continue
                key = info.name.split(".", 1)[0]
                if key in seen_keys:  # one image per sample key (first image member wins)
                    continue
                seen_keys.add(key)
                yield new_row(f"{tar_uri}#{info.name}", dataset, src.kind, tar_offset=offset, tar_size=info.size)


def list_source(src: SourceConfig) -> Iterator[dict]:
    dataset = dataset_name(src)
    if src.type == "samples":
        from curate.samples import generate_samples

        generate_samples(src.path, src.count)
    if src.type in ("dir", "samples"):
        if fs.is_local(src.path):
            if not os.path.isdir(src.path):
                raise SourceError(f"{src.path}: source directory does not exist")
            entries = _local_dir(src.path)
        else:
            entries = _remote_dir(src.path)
        for path, error in entries:
            row = new_row(printable_path(path), dataset, src.kind)
            yield quarantine(row, QuarantineReason.unreadable.value, error) if error else row
    elif src.type == "glob":
        matches = sorted(globlib.glob(src.path, recursive=True))
        if not matches:
            raise SourceError(f"{src.path}: the glob matches no file")
        for path in matches:
            if os.path.isfile(path) or os.path.islink(path) or os.path.exists(path) and not os.path.isdir(path):
                row = new_row(printable_path(path), dataset, src.kind)
                problem = local_file_problem(path)
                yield quarantine(row, QuarantineReason.unreadable.value, problem) if problem else row
    elif src.type == "list":
        for uri, caption in _list_file(src):
            yield new_row(uri, dataset, src.kind, source_caption=caption)
    elif src.type == "webdataset":
        yield from _tar_members(src, dataset)


def list_inputs(sources: list[SourceConfig]) -> Iterator[dict]:
    for src in sources:
        yield from list_source(src)
