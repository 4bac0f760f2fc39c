"""Generation over prompts that start alike: the common prefix is run once and its KV cache copied
into every row of the batch, instead of being recomputed per prompt.

The question writer's prompts are a fixed system prompt and instruction followed by one caption, so
about half of each prompt's tokens are the same in every row; vLLM calls this prefix caching. Rows are
laid out as ``prefix | padding | own tokens`` with the padding masked, so every row sees the prefix
at positions ``0..p-1`` and its own tokens right after, as it does left-padded and alone: greedy
outputs do not change (tests/backends/test_shared_prefix.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MIN_SHARED_TOKENS = 16  # below this the copy costs about what it saves


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens that every row starts with, leaving each row at least one token of its own (the first
    forward pass needs one input position per row)."""
    if not rows:
        return 0
    shortest = min(len(r) for r in rows)
    first = rows[0]
    n = 0
    while n < shortest - 1 and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def unpadded_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """Each row's real tokens, in order (padding, wherever it is, dropped)."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]


def prefix_then_padded(rows: Sequence[Sequence[int]], prefix_length: int, pad_id: int) -> dict:
    """``input_ids`` and ``attention_mask`` as ``prefix | padding | rest of the row``: the shared
    tokens first, so a cache that holds them lines up with every row."""
    rests = [list(r[prefix_length:]) for r in rows]
    width = prefix_length + max(len(r) for r in rests)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, rest) in enumerate(zip(rows, rests)):
        ids[i, :prefix_length] = torch.tensor(row[:prefix_length], dtype=torch.long)
        mask[i, :prefix_length] = 1
        if rest:
            ids[i, width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[i, width - len(rest):] = 1
    return {"input_ids": ids, "attention_mask": mask}


class SharedPrefix:
    """The KV cache of the last prefix seen (one model forward per distinct prefix), and, for the
    static cache, one preallocated batch cache that is reset and refilled per batch: a new cache
    object per batch would move its tensors and make the compiled decoding step re-record."""

    def __init__(self, model):
        self.model = model
        self._prefix: tuple[int, ...] | None = None
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._static = None
        self._static_shape: tuple[int, int] | None = None

    def _prefix_layers(self, prefix: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        key = tuple(prefix)
        if key != self._prefix:
            from transformers import DynamicCache

            cache = DynamicCache()
            ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.model.device)
            with torch.inference_mode():
                self.model(input_ids=ids, past_key_values=cache, use_cache=True)
            self._layers = [(layer.keys, layer.values) for layer in cache.layers]
            self._prefix = key
        return self._layers

    def cache_for(self, prefix: Sequence[int], batch_size: int, static_length: int | None):
        """A cache holding ``prefix`` in each of ``batch_size`` rows: dynamic when ``static_length``
        is None, else static with room for ``static_length`` tokens."""
        from transformers import DynamicCache, StaticCache

        layers = self._prefix_layers(prefix)
        if static_length is None:
            cache = DynamicCache()
        elif self._static is not None and self._static_shape == (batch_size, static_length):
            cache = self._static
            cache.reset()
        else:
            self._static = None  # free the old one before allocating
            cache = StaticCache(config=self.model.config, max_cache_len=static_length)
            self._static, self._static_shape = cache, (batch_size, static_length)
        positions = torch.arange(len(prefix), device=self.model.device)
        for i, (keys, values) in enumerate(layers):
            keys, values = (t.expand(batch_size, -1, -1, -1) for t in (keys, values))
            if static_length is None:  # a dynamic cache keeps what it is given: give it its own rows
                keys, values = keys.contiguous(), values.contiguous()
            # a static cache copies the rows into its own tensors: no batch-sized copy in between
            cache.update(keys, values, i, {"cache_position": positions})
        return cache
