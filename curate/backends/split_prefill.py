"""One decode loop over a batch whose prompts were prefilled in groups of similar length.

A caption call is mostly prefill (71% of a call of 720 crops at Qwen2-VL-7B shapes on an H200,
benchmarks/RESULTS.md), and a batch's prefill computes every row at its longest prompt's length:
PS3-sized crops padded 1.49x, a pipeline's crops (most at the pixel floor, a few near 1280 vision
tokens) up to 3.4x. Cutting the batch removes the padding but gives each part its own decode loop,
which costs seconds. Here each group of similar lengths is prefilled on its own (its prompts less
the last token), the groups' KV caches are left-padded to one length and joined, and ``generate``
continues from the joined cache: the last prompt token and every new token run as one batch.

Positions do not depend on the padding (they count a row's real tokens), so the cached keys equal a
padded prefill's; Qwen2-VL's multimodal rotary offsets are computed again for the joined layout
with the model's own ``get_rope_index``. Greedy text equals the padded path's (tests/backends/).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from curate.backends.types import Generation

PADDED = ("input_ids", "attention_mask", "mm_token_type_ids")  # per-token inputs, left-padded
PREFILL_GROUP_OVERHEAD_TOKENS = 8192
"""A prefill group's fixed cost in padded tokens: one forward (and vision tower call), no decode loop."""


def left_pad(tensor: torch.Tensor, length: int, value, dim: int = 1) -> torch.Tensor:
    """``tensor`` with ``value`` put before its entries along ``dim`` (the token axis) up to ``length``."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_full(shape, value), tensor], dim=dim)


def join_inputs(groups: Sequence[dict], pad_token_id: int) -> dict:
    """The groups' per-token inputs left-padded to the longest and stacked in group order; image
    grids concatenated in the same order (other inputs are the prefill's alone)."""
    length = max(g["input_ids"].shape[1] for g in groups)
    joined = {}
    for key in PADDED:
        if key in groups[0]:
            fill = pad_token_id if key == "input_ids" else 0
            joined[key] = torch.cat([left_pad(g[key], length, fill) for g in groups])
    if "image_grid_thw" in groups[0]:
        joined["image_grid_thw"] = torch.cat([g["image_grid_thw"] for g in groups])
    return joined


def join_caches(caches: Sequence, length: int):
    """One DynamicCache from the groups' caches: each layer's keys and values [rows, heads, n, dim]
    left-padded with zeros (masked, never attended) to ``length`` and stacked in group order."""
    from transformers import DynamicCache

    joined = DynamicCache()
    for layer in range(len(caches[0].layers)):
        keys = torch.cat([left_pad(c.layers[layer].keys, length, 0, dim=2) for c in caches])
        values = torch.cat([left_pad(c.layers[layer].values, length, 0, dim=2) for c in caches])
        joined.update(keys, values, layer)
    return joined


@torch.inference_mode()
def prefill(model, inputs: dict):
    """The KV cache of ``inputs``' prompts less their last token (left padding keeps every row's
    last token in the last column), which ``generate`` then runs with the first decoding step."""
    cut = {k: (v[:, :-1] if k in PADDED else v) for k, v in inputs.items()}
    return model(**cut, use_cache=True, logits_to_keep=1).past_key_values


def set_rope_offsets(model, joined: dict) -> None:
    """Qwen2-VL class: the multimodal rotary offsets of the joined rows, which decoding adds to a
    row's text positions (the model keeps them from its last prefill, here a group's)."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "get_rope_index") or "image_grid_thw" not in joined:
        return
    _, inner.rope_deltas = inner.get_rope_index(**joined)


def generate_split_prefill(model, generate: Callable[[dict, dict], list[Generation]], groups: Sequence[dict],
                           gen_kwargs: dict, pad_token_id: int) -> list[Generation]:
    """Generations for the rows of ``groups`` (each a prepared, left-padded input dict), in group
    order: each group prefilled alone, then one ``generate`` call (``generate(inputs, kwargs)``)
    from the joined cache. ``gen_kwargs`` must not ask for a static cache (the cache is ours)."""
    device = model.device
    groups = [{k: v.to(device) if hasattr(v, "to") else v for k, v in g.items()} for g in groups]
    caches = [prefill(model, g) for g in groups]
    joined = join_inputs(groups, pad_token_id)
    length = joined["input_ids"].shape[1]
    cache = join_caches(caches, length - 1)
    del caches
    set_rope_offsets(model, joined)
    text_inputs = {k: v for k, v in joined.items() if k in PADDED}
    return generate(text_inputs, {**gen_kwargs, "past_key_values": cache})
