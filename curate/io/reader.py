"""Reading a curate output back: one record by key (through the index), or every sample of a shard."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator

import pyarrow.compute as pc

from curate.io.layout import OutputLayout
from curate.io.objpath import OutputPath, open_sequential, read_parquet, read_slice


def find_record(output: str | OutputPath, key: str) -> dict:
    """The ImageRecord of ``key`` (or of the one key starting with it), read by offset from its shard."""
    layout = OutputLayout.at(output)
    if not layout.index.exists():
        raise FileNotFoundError(f"{output}: no index.parquet (is the run finished?)")
    index = read_parquet(layout.index, columns=["key", "shard", "json_offset", "json_size"])
    hits = index.filter(pc.starts_with(index["key"], key.lower())).to_pylist()
    if not hits:
        raise KeyError(f"{output}: no sample with key {key!r}")
    if len(hits) > 1:
        raise ValueError(f"{output}: {len(hits)} keys start with {key!r}; give more digits")
    hit = hits[0]
    return json.loads(read_slice(layout.shards_dir / hit["shard"], hit["json_offset"], hit["json_size"]))


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
