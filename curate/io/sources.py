"""List the inputs of every configured source, in a stable order.

Listing runs on the driver and yields one row per input (see curate/rows.py). Paths that
cannot be listed (unreadable directories, symlink loops, broken links) become quarantined rows:
an input that was seen is always accounted for.
"""

from __future__ import annotations

import glob as globlib
import itertools
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate.config import SourceConfig
from curate.io import fs
from curate.io.fs import local_file_problem, printable_path
from curate.io.shards import iter_tar_members
from curate.records import QuarantineReason
from curate.rows import new_row, quarantine, to_table

# The names of the formats curate decodes (curate.ops.decode.ALLOWED_FORMATS): a folder lists these.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif",
                    ".avif", ".heic", ".heif", ".mpo"}

# Image files curate does not decode. A folder lists them too, each quarantined with what to do: a
# folder of scans as PDFs, or a camera's raw files, is never left out unsaid.
_RAW = "camera raw files are not read: develop them to JPEG or PNG first (darktable-cli, rawpy)"
UNREAD_FORMATS = {
    ".pdf": "PDF documents are not read: render its pages to images first (pdftoppm -r 200 -png FILE PAGE)",
    ".jxl": "JPEG XL is not read (Pillow has no decoder for it): convert it to PNG or JPEG first (djxl)",
    ".jp2": "JPEG 2000 is not read: convert it to PNG first (opj_decompress)",
    ".j2k": "JPEG 2000 is not read: convert it to PNG first (opj_decompress)",
    ".psd": "Photoshop documents are not read: export them to PNG first",
    ".svg": "vector drawings are not read: render them to PNG first (rsvg-convert)",
    **dict.fromkeys((".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"), _RAW),
}


class SourceError(ValueError):
    """A source that cannot be listed at all (missing path, wrong file type)."""


def dataset_name(src: SourceConfig) -> str:
    if src.dataset:
        return src.dataset
    return fs.stem(src.path) or "images"


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def unread_format(name: str) -> str | None:
    """Why an image file of this name is not read, and what to do, where its format is one curate
    knows but does not decode."""
    return UNREAD_FORMATS.get(os.path.splitext(name)[1].lower())


def is_listed_name(name: str) -> bool:
    """Whether a folder lists the file: an image curate reads, or one it names the reason it does not."""
    return is_image_name(name) or unread_format(name) is not None


Problem = tuple[QuarantineReason, str]  # a listed input's quarantine reason and detail


def unread_format_problem(name: str) -> Problem | None:
    """The quarantine of a listed file whose format curate knows but does not decode, if it is one."""
    unread = unread_format(name)
    return (QuarantineReason.unsupported_format, unread) if unread else None


def listed_file_problem(path: str) -> Problem | None:
    """Why a listed local file is quarantined before it is read, if it is."""
    unread = unread_format_problem(path)
    if unread:
        return unread
    problem = local_file_problem(path)
    return (QuarantineReason.unreadable, problem) if problem else None


def _local_dir(root: str) -> Iterator[tuple[str, Problem | None]]:
    """(path, problem) pairs below a local directory; symlinked directories are not followed."""
    errors: list[OSError] = []
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if is_listed_name(name):
                found.append(os.path.join(dirpath, name))
    for path in found:
        yield path, listed_file_problem(path)
    for err in errors:
        yield (err.filename or root), (QuarantineReason.unreadable, f"cannot list directory: {err.strerror or err}")


def _remote_dir(uri: str) -> Iterator[tuple[str, Problem | None]]:
    """(URI, problem) for each image object under a prefix on object storage, or for the one object
    ``uri`` names (``-i s3://bucket/photo.jpg``, as a local file is taken)."""
    filesystem, path = fs.resolve(uri)
    scheme = uri.split("://", 1)[0]
    try:
        found = filesystem.get_file_info(path)
    except OSError as e:  # credentials, a bucket we may not read, no endpoint
        raise SourceError(f"{uri}: cannot read it: {e}") from e
    if found.type == pafs.FileType.File:
        if not is_image_name(path):
            raise SourceError(f"{uri}: not an image file name (one of {', '.join(sorted(IMAGE_EXTENSIONS))})")
        yield uri, None
        return
    if found.type == pafs.FileType.NotFound:
        raise SourceError(f"{uri}: no such object or prefix")
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    for info in sorted(infos, key=lambda i: i.path):
        if info.type == pafs.FileType.File and is_listed_name(info.path):
            yield f"{scheme}://{info.path}", unread_format_problem(info.path)


MAX_LIST_LINE_BYTES = 64 * 1024  # a URI longer than this is no URI (and /dev/zero has no newline)


def _list_entry(src: SourceConfig, where: str, uri, caption=None) -> tuple[str, str | None, str | None]:
    """(uri, caption, problem) for one entry of a list source; a bad entry is quarantined, not fatal."""
    if not isinstance(uri, str) or not uri.strip():
        shown = "empty" if uri is None or uri == "" else f"a {type(uri).__name__}, not a string"
        return f"{src.path}#{where}", None, f"{where}: uri is {shown}"
    uri = fs.beside(src.path, uri.strip())
    if caption is not None and not isinstance(caption, str):
        return uri, None, f"{where}: caption is a {type(caption).__name__}, not a string"
    return uri, caption, None


def _holds_images(kind: pa.DataType) -> bool:
    """Whether a list column holds image bytes (or HF datasets' Image structs) rather than paths."""
    if pa.types.is_struct(kind):
        return any(kind.field(i).name == "bytes" for i in range(kind.num_fields))
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _list_parquet(src: SourceConfig) -> Iterator[tuple[str, str | None, str | None]]:
    filesystem, path = fs.resolve(src.path)
    try:
        parquet = pq.ParquetFile(filesystem.open_input_file(path))
    except Exception as e:
        raise SourceError(f"{src.path}: cannot read as parquet ({type(e).__name__}: {e})") from e
    names = parquet.schema_arrow.names
    for column, option in ((src.column, "column"), (src.caption_column, "caption_column")):
        if column is not None and column not in names:
            raise SourceError(f"{src.path}: no column {column!r} for sources[].{option} "
                              f"(columns: {', '.join(names)})")
    if _holds_images(parquet.schema_arrow.field(src.column).type):
        raise SourceError(f"{src.path}: column {src.column!r} holds the images themselves, not their paths: curate run "
                          "reads image files (write them out first, one file per row; `curate augment canvas` reads "
                          "such a table as it is)")
    columns = [src.column] + ([src.caption_column] if src.caption_column else [])
    row_number = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=65536):  # bounded memory
        uris = batch.column(0).to_pylist()
        captions = batch.column(1).to_pylist() if src.caption_column else [None] * len(uris)
        for uri, caption in zip(uris, captions):
            yield _list_entry(src, f"row={row_number}", uri, caption)
            row_number += 1


def _list_text(src: SourceConfig) -> Iterator[tuple[str, str | None, str | None]]:
    local = fs.local_path(src.path)
    if local is not None:
        problem = local_file_problem(local)
        if problem:
            raise SourceError(f"{src.path}: cannot read the list: {problem}")
    filesystem, path = fs.resolve(src.path)
    with filesystem.open_input_stream(path) as f:
        for number, line in enumerate(_capped_lines(f, MAX_LIST_LINE_BYTES), start=1):
            where = f"line={number}"
            if line is None:
                yield f"{src.path}#{where}", None, f"{where}: longer than {MAX_LIST_LINE_BYTES} bytes"
                continue
            try:
                text = line.decode("utf-8").strip()
            except UnicodeDecodeError:
                yield f"{src.path}#{where}", None, f"{where}: not UTF-8 text"
                continue
            if text and not text.startswith("#"):
                yield _list_entry(src, where, text)


def _capped_lines(stream, cap: int) -> Iterator[bytes | None]:
    """Lines of a byte stream read in blocks; a line longer than ``cap`` is yielded once as None and
    skipped, so an endless line costs no more than ``cap`` bytes of memory."""
    pending, too_long = b"", False
    while True:
        block = stream.read(1 << 20)
        if not block:
            break
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if too_long:
                too_long = False
                continue
            yield line if len(line) <= cap else None
        if len(pending) > cap:
            if not too_long:
                yield None
            pending, too_long = b"", True
    if pending and not too_long:
        yield pending if len(pending) <= cap else None


def _tar_members(src: SourceConfig, dataset: str) -> Iterator[dict]:
    paths = sorted(globlib.glob(src.path)) if fs.is_local(src.path) else [src.path]
    if not paths:
        raise SourceError(f"{src.path}: no tar shards match")
    for tar_uri in paths:
        members = 0
        try:
            local = fs.local_path(tar_uri)
            problem = local_file_problem(local) if local is not None else None
            if problem:
                raise OSError(problem)
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
                    members += 1
                    yield new_row(f"{tar_uri}#{info.name}", dataset, src.kind, tar_uri=tar_uri,
                                  tar_offset=offset, tar_size=info.size)
        except (tarfile.TarError, OSError, EOFError) as e:
            # A damaged shard is one bad input: its readable members stay listed above.
            detail = f"not a readable tar shard after {members} image members: {type(e).__name__}: {e}"
            yield quarantine(new_row(printable_path(tar_uri), dataset, src.kind),
                             QuarantineReason.unreadable.value, detail)


def list_source(src: SourceConfig) -> Iterator[dict]:
    dataset = dataset_name(src)
    if src.type == "samples":
        from curate.samples import generate_samples

        generate_samples(src.path, src.count)
    if src.type in ("dir", "samples"):
        if fs.is_local(src.path):
            if os.path.isfile(src.path):  # given as an input, any file the CLI took for no other kind
                raise SourceError(f"{src.path}: " + (unread_format(src.path) or (
                    "not an image, a folder, a list (.txt, .parquet) or tar shards; unpack an archive first")))
            if not os.path.isdir(src.path):
                raise SourceError(f"{src.path}: does not exist (no file or folder there)")
            entries = _local_dir(src.path)
        else:
            entries = _remote_dir(src.path)
        for path, problem in entries:
            row = new_row(printable_path(path), dataset, src.kind)
            yield quarantine(row, problem[0].value, problem[1]) if problem else row
    elif src.type == "glob":
        matches = sorted(globlib.glob(src.path, recursive=True))
        if not matches:
            raise SourceError(f"{src.path}: the glob matches no file")
        for path in matches:
            if os.path.isfile(path) or os.path.islink(path) or os.path.exists(path) and not os.path.isdir(path):
                row = new_row(printable_path(path), dataset, src.kind)
                problem = listed_file_problem(path)
                yield quarantine(row, problem[0].value, problem[1]) if problem else row
    elif src.type == "list":
        entries = _list_parquet(src) if src.path.endswith(".parquet") else _list_text(src)
        for uri, caption, problem in entries:
            row = new_row(uri, dataset, src.kind, source_caption=caption)
            yield quarantine(row, QuarantineReason.invalid_entry.value, problem) if problem else row
    elif src.type == "webdataset":
        yield from _tar_members(src, dataset)


def list_inputs(sources: list[SourceConfig]) -> Iterator[dict]:
    """Every source's inputs, one from each source still listing in turn (by name within a source).

    A corpus kept as a source per kind (pages, photos) then reaches the stages mixed. Listed one
    source after the other, all its pages would go through the CPU OCR stage while the GPU stages
    waited for photos, as in an H200 run whose 300 pages were listed first: the mask stage waited
    50-60 s (benchmarks/RESULTS.md). The order is still stable, so a resumed run lists the same."""
    listings = [list_source(src) for src in sources]
    while listings:
        still_listing = []
        for listing in listings:
            for row in itertools.islice(listing, 1):
                yield row
                still_listing.append(listing)
        listings = still_listing


def numbered_batches(items: Iterable[dict], make_table: Callable[[list[dict]], pa.Table],
                     size: int = 4096) -> Iterator[pa.Table]:
    """Listed items as tables of up to ``size`` rows, each numbered by its position in the listing
    (its ordinal): a listing of 10^8 inputs is never whole in the driver's memory."""
    rows = []
    for ordinal, item in enumerate(items):  # the items are the listing's own fresh dicts
        item["ordinal"] = ordinal
        rows.append(item)
        if len(rows) >= size:
            yield make_table(rows)
            rows = []
    if rows:
        yield make_table(rows)


def listed_batches(sources: list[SourceConfig], size: int = 4096, limit: int | None = None) -> Iterator[pa.Table]:
    """The corpus's listing as curate.rows tables (numbered_batches); its first ``limit`` inputs where
    one is given (a trial run: the listing's order is stable, so the whole run later continues it)."""
    return numbered_batches(itertools.islice(list_inputs(sources), limit), to_table, size)


def block_sizes(small: int, small_blocks: int = 4096, largest: int = 4096) -> Iterator[int]:
    """Rows per Ray input block, in order. A task reads its block's images one after another, so the
    first ``small_blocks`` blocks hold ``small`` rows (the ingest batch): a run of up to ~65k inputs
    spreads over every CPU as evenly as blocks of that size allow. Later blocks double every 64 up to
    ``largest``, so 10^8 inputs are ~30k blocks (object refs held by the driver)."""
    size = small
    for made in itertools.count(1):
        yield size
        if made >= small_blocks and made % 64 == 0:
            size = min(size * 2, max(largest, small))


class BlockCutter:
    """Rows in, blocks of the next size out (the sizes an iterator such as ``block_sizes``)."""

    def __init__(self, sizes: Iterator[int]):
        self.sizes, self.pending, self.have, self.want = sizes, [], 0, next(sizes)

    def add(self, table: pa.Table) -> Iterator[pa.Table]:
        """The blocks that ``table``'s rows complete."""
        self.pending.append(table)
        self.have += table.num_rows
        while self.have >= self.want:
            joined = pa.concat_tables(self.pending)
            yield joined.slice(0, self.want)
            rest = joined.slice(self.want)
            self.pending, self.have, self.want = [rest], rest.num_rows, next(self.sizes)

    def close(self) -> Iterator[pa.Table]:
        """The rows held so far as a (short) block of their own."""
        if self.have:
            yield pa.concat_tables(self.pending)
            self.pending, self.have, self.want = [], 0, next(self.sizes)


def rechunk(tables: Iterable[pa.Table], sizes: Iterator[int]) -> Iterator[pa.Table]:
    """Cut a stream of tables into consecutive tables of the next size each (the last may be short)."""
    cutter = BlockCutter(sizes)
    for table in tables:
        yield from cutter.add(table)
    yield from cutter.close()


def rechunk_by_group(tables: Iterable[pa.Table], groups: Callable[[pa.Table], list[int]],
                     sizes: Iterator[int]) -> Iterator[pa.Table]:
    """Like ``rechunk``, for inputs read from shared groups (a parquet table's row groups, ``groups``
    giving each row's, in listing order): a block also closes where a group ends once it holds half
    its size: a group of up to half a block is never cut (one task reads it), and equal groups of up
    to a block get a block each."""
    cutter, last = BlockCutter(sizes), None
    for table in tables:
        keys = groups(table)
        start = 0
        for end in range(1, table.num_rows + 1):
            if end < table.num_rows and keys[end] == keys[start]:
                continue
            if keys[start] != last and cutter.have >= cutter.want // 2:
                yield from cutter.close()
            last = keys[start]
            yield from cutter.add(table.slice(start, end - start))  # rows of one group
            start = end
    yield from cutter.close()
