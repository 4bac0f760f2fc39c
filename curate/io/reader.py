"""Reading a curate output back: one record by key (through the index), or every sample of a shard."""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from curate.io.layout import OutputLayout
from curate.io.objpath import OutputPath, open_sequential, read_parquet, read_parquet_schema, read_slice

# What a listing shows of each sample, where the output's index has it: a corpus's kind and regions,
# a canvas's background and conversation turns
LISTED = ("key", "kind", "width", "height", "n_regions", "background", "turns", "uri")


def find_record(output: str | OutputPath, wanted: str) -> dict:
    """The record of the one sample whose key starts with ``wanted`` or whose input was ``wanted``
    (the path or URI as the run listed it, or its end, such as the file's name, or a longer path that
    ends with it, such as the file's whole path): a corpus's is read
    by offset from its shard, a canvas output's (its index has no offsets) found in its shard."""
    layout = OutputLayout.at(output)
    index = _written(layout, output, ["key", "uri", "shard", "json_offset", "json_size"])
    hits = index.filter(pc.starts_with(index["key"], wanted.lower()))
    if not hits.num_rows:
        hits = _by_input(index, wanted)
    if not hits.num_rows:
        raise LookupError(_not_written(layout, output, wanted))
    if hits.num_rows > 1:
        raise ValueError(f"{output}: {hits.num_rows} samples match {wanted!r}; give more of the key or path")
    hit = hits.to_pylist()[0]
    shard = layout.shards_dir / hit["shard"]
    if "json_offset" in hit:
        return json.loads(read_slice(shard, hit["json_offset"], hit["json_size"]))
    return next(json.loads(files["json"]) for key, files in shard_samples(shard) if key == hit["key"])


def _by_input(table: pa.Table, wanted: str) -> pa.Table:
    """The rows of ``table`` whose ``uri`` is the input ``wanted``: the path as the run listed it, its
    end (the file's name), or, for a run that listed a relative path (photos/a.jpg), the file's whole
    path or ./photos/a.jpg (the listed path is one of the path's endings)."""
    hits = table.filter(pc.or_(pc.equal(table["uri"], wanted), pc.ends_with(table["uri"], "/" + wanted.lstrip("/"))))
    if not hits.num_rows and "://" not in wanted:
        parts = posixpath.normpath(wanted).strip("/").split("/")
        endings = pa.array(["/".join(parts[i:]) for i in range(len(parts))])
        hits = table.filter(pc.is_in(table["uri"], value_set=endings))
    return hits


def _not_written(layout: OutputLayout, output: str | OutputPath, wanted: str) -> str:
    """Why no sample matches ``wanted``: its input's quarantine reason where the run quarantined it."""
    if layout.quarantine.exists():
        quarantined = _by_input(read_parquet(layout.quarantine, columns=["uri", "reason", "detail"]), wanted)
        if quarantined.num_rows:
            first = quarantined.to_pylist()[0]
            return f"{output}: {first['uri']} was not written: quarantined as {first['reason']} ({first['detail']})"
    return f"{output}: no sample with the key or input {wanted!r}"


def list_samples(output: str | OutputPath, limit: int = 20) -> tuple[int, list[dict]]:
    """How many samples ``output`` holds, and the first ``limit`` of them in index order, with the
    ``LISTED`` columns its index has."""
    index = _written(OutputLayout.at(output), output, list(LISTED))
    return index.num_rows, index.slice(0, limit).to_pylist()


def _written(layout: OutputLayout, output: str | OutputPath, columns: list[str]):
    """The index's rows of written samples, with those of ``columns`` it has (a canvas output's index
    also lists quarantined inputs, by ``status``)."""
    if not layout.index.exists():
        raise FileNotFoundError(f"{output}: no index.parquet (is the run finished?)" if layout.manifest.exists() else
                                f"{output}: no manifest.json or index.parquet; is this a curate output?")
    names = read_parquet_schema(layout.index).names
    index = read_parquet(layout.index, columns=[c for c in [*columns, "status"] if c in names])
    if "status" in names:
        index = index.filter(pc.equal(index["status"], "written")).drop_columns(["status"])
    return index


def shard_samples(shard: OutputPath) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for each sample of a curate shard, in order (its JSON record comes last)."""
    pending: dict[str, dict[str, bytes]] = {}
    with open_sequential(shard) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.isfile():
                key, _, ext = info.name.partition(".")
                pending.setdefault(key, {})[ext] = tar.extractfile(info).read()
                if "json" in pending[key]:
                    yield key, pending.pop(key)


def image_index(layout: OutputLayout) -> dict[str, tuple[str, int, int]]:
    """key -> (shard, offset, size) of every stored image, from the index."""
    table = read_parquet(layout.index, columns=["key", "shard", "image_offset", "image_size"])
    return {k: (s, o, n) for k, s, o, n in zip(*(table[c].to_pylist() for c in table.column_names))}


def read_image(layout: OutputLayout, index: dict[str, tuple[str, int, int]], key: str) -> bytes:
    shard, offset, size = index[key]
    return read_slice(layout.shards_dir / shard, offset, size)
