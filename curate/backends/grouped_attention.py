"""Decoding attention for grouped-query models without copying the KV cache per query head.

Llama-3.1-8B has 32 query heads over 8 key/value heads, Qwen2-VL-7B 28 over 4. transformers' SDPA
path can hand the grouping to the kernel only when there is no attention mask; a padded batch (and
every static cache) has one, so each decoding step copied the whole KV cache 4x (Llama) or 7x (Qwen)
before attending. At batch 512 and a 512-token cache that is ~130 GB of memory traffic per token.

One new token per row lets the group share that row's keys: the group's query heads become the
query-length axis of one SDPA call per key/value head, and the padding mask, the same for every
head, broadcasts over them. Prefill (several query tokens) and models without grouping keep
transformers' SDPA path.
"""

from __future__ import annotations

import torch

NAME = "sdpa_grouped_decode"


def grouped_decode_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None,
                             dropout: float = 0.0, **kwargs):
    """An attention function for transformers' ``AttentionInterface``: (output [B, q, H, D], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_length, dim = query.shape
    mask_per_head = attention_mask is not None and attention_mask.shape[1] != 1
    if q_length != 1 or groups == 1 or key.shape[1] * groups != heads or mask_per_head:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    grouped = query.reshape(batch, heads // groups, groups, dim)  # heads of one KV head are adjacent
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def use_grouped_decode(model) -> None:
    """Switch a loaded transformers model from ``sdpa`` to the grouped decoding attention (its
    language model only: a vision tower keeps its own)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    text = "text_config" in getattr(model.config, "sub_configs", {})
    model.set_attn_implementation({"text_config": NAME} if text else NAME)
