"""Reading a curate output back: one record by key (through the index), or every sample of a shard."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc

from curate.io.fs import read_local_parquet, read_range
from curate.io.layout import OutputLayout


def find_record(output: str | Path, key: str) -> dict:
    """The ImageRecord of ``key`` (or of the one key starting with it), read by offset from its shard."""
    layout = OutputLayout(Path(output))
    if not layout.index.exists():
        raise FileNotFoundError(f"{output}: no index.parquet (is the run finished?)")
    index = read_local_parquet(layout.index, columns=["key", "shard", "json_offset", "json_size"])
    hits = index.filter(pc.starts_with(index["key"], key.lower())).to_pylist()
    if not hits:
        raise KeyError(f"{output}: no sample with key {key!r}")
    if len(hits) > 1:
        raise ValueError(f"{output}: {len(hits)} keys start with {key!r}; give more digits")
    hit = hits[0]
    data = read_range(str(layout.shards_dir / hit["shard"]), hit["json_offset"], hit["json_size"])
    return json.loads(data)
