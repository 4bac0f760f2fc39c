"""Listing batches and the blocks they are cut into for the Ray plan."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from curate.io.sources import block_sizes, rechunk


def test_blocks_stay_small_for_a_short_run_then_grow_to_the_largest():
    sizes = list(itertools.islice(block_sizes(16, small_blocks=8, largest=256), 8 + 64 * 6))
    assert sizes[:8] == [16] * 8
    assert sizes[8:64] == [16] * 56  # growth starts at a multiple of 64 blocks
    assert sizes[64] == 32 and sizes[128] == 64 and max(sizes) == 256
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("lengths", [[4096, 4096, 100], [1, 2, 3, 50, 0, 7], [0], [5000]])
def test_rechunk_keeps_every_row_once_in_order_at_the_sizes_asked(lengths):
    start = list(itertools.accumulate([0] + lengths))
    tables = [pa.table({"ordinal": pa.array(range(a, b), pa.int64())}) for a, b in zip(start, start[1:])]
    blocks = list(rechunk(tables, block_sizes(16, small_blocks=4, largest=64)))
    assert [r for b in blocks for r in b["ordinal"].to_pylist()] == list(range(sum(lengths)))
    expected = list(itertools.islice(block_sizes(16, small_blocks=4, largest=64), len(blocks)))
    assert [b.num_rows for b in blocks[:-1]] == expected[:-1]
    assert not blocks or 0 < blocks[-1].num_rows <= expected[-1]
