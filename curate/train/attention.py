"""A SigLIP encoder run layer by layer, so the high-res pass can attend to the low-res pass's keys
and values at every layer (PS3's low-res KV cache, Table 6: +8.8) without re-encoding the low-res
tokens. The layers' own weights are used (transformers' SiglipEncoderLayer); only the loop is ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KV = tuple[torch.Tensor, torch.Tensor]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def layer_forward(layer, hidden: torch.Tensor, context: KV | None = None) -> tuple[torch.Tensor, KV]:
    """One encoder layer; queries are ``hidden``'s tokens, keys and values are ``context``'s (B, heads,
    M, head_dim) followed by the tokens' own. Returns the new hidden states and the tokens' own (k, v)."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    q, k, v = (_heads(proj(x), attn.num_heads) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    keys, values = (k, v) if context is None else (torch.cat([context[0], k], 2), torch.cat([context[1], v], 2))
    out = F.scaled_dot_product_attention(q, keys, values, scale=attn.scale)
    hidden = hidden + attn.out_proj(out.transpose(1, 2).reshape(hidden.shape))
    hidden = hidden + layer.mlp(layer.layer_norm2(hidden))
    return hidden, (k, v)


def encode_with_cache(encoder, embeds: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[KV]]:
    """The low-res pass: last hidden state, every layer's output, and every layer's (k, v)."""
    hidden, outputs, cache = embeds, [], []
    for layer in encoder.layers:
        hidden, kv = layer_forward(layer, hidden)
        outputs.append(hidden)
        cache.append(kv)
    return hidden, outputs, cache


def encode_with_context(encoder, tokens: torch.Tensor, cache: list[KV] | None,
                        rows: torch.Tensor | None = None) -> torch.Tensor:
    """The high-res pass: ``tokens`` (R, K, D) attend, at each layer, to the cached low-res (k, v) of
    image ``rows[r]`` as well as to each other."""
    hidden = tokens
    for i, layer in enumerate(encoder.layers):
        context = None
        if cache is not None:
            k, v = cache[i]
            context = (k[rows], v[rows]) if rows is not None else (k, v)
        hidden, _ = layer_forward(layer, hidden, context)
    return hidden
