"""Reading a curate output back: one record by key (through the index), or every sample of a shard."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator

import pyarrow.compute as pc

from curate.io.layout import OutputLayout
from curate.io.objpath import OutputPath, open_sequential, read_parquet, read_slice


def find_record(output: str | OutputPath, wanted: str) -> dict:
    """The ImageRecord of the one sample whose key starts with ``wanted`` or whose input was
    ``wanted`` (the path or URI as the run listed it, or its end, such as the file's name), read by
    offset from its shard."""
    layout = OutputLayout.at(output)
    index = _index(layout, output, ["key", "uri", "shard", "json_offset", "json_size"])
    hits = index.filter(pc.starts_with(index["key"], wanted.lower()))
    if not hits.num_rows:
        by_input = pc.or_(pc.equal(index["uri"], wanted), pc.ends_with(index["uri"], "/" + wanted.lstrip("/")))
        hits = index.filter(by_input)
    if not hits.num_rows:
        raise LookupError(f"{output}: no sample with the key or input {wanted!r}")
    if hits.num_rows > 1:
        raise ValueError(f"{output}: {hits.num_rows} samples match {wanted!r}; give more of the key or path")
    hit = hits.to_pylist()[0]
    return json.loads(read_slice(layout.shards_dir / hit["shard"], hit["json_offset"], hit["json_size"]))


def list_samples(output: str | OutputPath, limit: int = 20) -> tuple[int, list[dict]]:
    """How many samples ``output`` holds, and the first ``limit`` of them in index order: key, kind,
    size, regions and the input each came from."""
    index = _index(OutputLayout.at(output), output, ["key", "kind", "width", "height", "n_regions", "uri"])
    return index.num_rows, index.slice(0, limit).to_pylist()


def _index(layout: OutputLayout, output: str | OutputPath, columns: list[str]):
    if not layout.index.exists():
        raise FileNotFoundError(f"{output}: no index.parquet (is the run finished?)" if layout.manifest.exists() else
                                f"{output}: no manifest.json or index.parquet; is this a curate output?")
    return read_parquet(layout.index, columns=columns)


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
