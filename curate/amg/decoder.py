"""SAM's mask decoder for many point prompts on a few crops: the reference arithmetic, reorganised.

The reference decoder runs once per batch of prompts of one crop and copies the crop's image
embedding (64x64x256) and positional encoding for every prompt. Here:

- what does not depend on the prompt is computed once per crop: the first block's image-side
  projections (keys and values of token-to-image attention, queries of image-to-token attention);
- attention runs through ``scaled_dot_product_attention``;
- the output upscaling (two stride-2 2x2 transposed convolutions with LayerNorm and GELU) is per
  pixel, so it runs as matrix products on channels-last "sub-pixel" tensors, and only the three
  final masks (not 32 channels) are shuffled back to image order;
- only the three multimask outputs are produced (the reference computes four and drops one).

Same modules and weights as the reference (segment_anything's, also used by EfficientViT-SAM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CropContext:
    """Per-crop tensors shared by every prompt of the crop (N = 64*64 image tokens)."""

    src: torch.Tensor  # (C, N, D) image embedding with the no-mask embedding added
    pe: torch.Tensor  # (1, N, D) dense positional encoding
    first_t2i_keys: torch.Tensor  # (C, N, D') first block, token-to-image attention keys
    first_t2i_values: torch.Tensor  # (C, N, D')
    first_i2t_queries: torch.Tensor  # (C, N, D') first block, image-to-token attention queries
    grid: tuple[int, int]


def _attend(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's Attention on already projected q/k/v (B, L, D'); returns the output projection."""
    heads = attn.num_heads

    def split(x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, heads, c // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    b, h, n, d = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


def crop_context(net, embeddings: torch.Tensor, dtype: torch.dtype) -> CropContext:
    """embeddings: (C, D, h, w) from ``SamFamilyModel.encode``."""
    c, d, h, w = embeddings.shape
    src = embeddings.flatten(2).transpose(1, 2).contiguous()
    pe = net.prompt_encoder.get_dense_pe().to(dtype).flatten(2).transpose(1, 2)
    first = net.mask_decoder.transformer.layers[0]
    t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    with_pe = src + pe
    return CropContext(src=src, pe=pe, first_t2i_keys=t2i.k_proj(with_pe), first_t2i_values=t2i.v_proj(src),
                       first_i2t_queries=i2t.q_proj(with_pe), grid=(h, w))


def _first_block(block, ctx: CropContext, owner: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TwoWayAttentionBlock.forward for keys = the crop's embedding, sharing image-side work per crop."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=tokens, k=tokens, v=tokens)
    else:
        q = tokens + tokens
        queries = tokens + block.self_attn(q=q, k=q, v=tokens)
    queries = block.norm1(queries)

    t2i = block.cross_attn_token_to_image
    q = t2i.q_proj(queries + tokens)
    out = torch.empty_like(q)
    # prompts of one crop share keys and values: their tokens form one query sequence
    for crop in owner.unique().tolist():
        rows = (owner == crop).nonzero().squeeze(1)
        p, t, c = q[rows].shape
        heads = t2i.num_heads
        qh = q[rows].reshape(1, p * t, heads, c // heads).transpose(1, 2)
        kh = ctx.first_t2i_keys[crop:crop + 1].view(1, -1, heads, c // heads).transpose(1, 2)
        vh = ctx.first_t2i_values[crop:crop + 1].view(1, -1, heads, c // heads).transpose(1, 2)
        out[rows] = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(p, t, c)
    queries = block.norm2(queries + t2i.out_proj(out))
    queries = block.norm3(queries + block.mlp(queries))

    i2t = block.cross_attn_image_to_token
    attn_out = _attend(i2t, ctx.first_i2t_queries[owner], i2t.k_proj(queries + tokens), i2t.v_proj(queries))
    keys = block.norm4(ctx.src[owner] + attn_out)
    return queries, keys


def _block(block, queries: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor, pe: torch.Tensor):
    """TwoWayAttentionBlock.forward (not the first), attention through SDPA."""
    q = queries + tokens
    queries = block.norm1(queries + _attend(block.self_attn, *(p(x) for p, x in zip(
        (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj), (q, q, queries)))))
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    keys_pe = keys + pe
    queries = block.norm2(queries + _attend(t2i, t2i.q_proj(queries + tokens), t2i.k_proj(keys_pe), t2i.v_proj(keys)))
    queries = block.norm3(queries + block.mlp(queries))
    attn_out = _attend(i2t, i2t.q_proj(keys_pe), i2t.k_proj(queries + tokens), i2t.v_proj(queries))
    return queries, block.norm4(keys + attn_out)


def _upscaled_masks(dec, keys: torch.Tensor, hyper: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """output_upscaling + hypernetwork product on channels-last sub-pixel tensors.

    keys (P, N, D) -> masks (P, M, 4h, 4w) for hyper (P, M, D/8)."""
    conv1, norm, act1, conv2, act2 = dec.output_upscaling
    p, n, d = keys.shape
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(d, -1)  # (D, [di, dj, out])
    x = (keys @ w1).view(p, n, 4, -1) + conv1.bias
    x = act1(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(x.shape[-1], -1)  # (D/4, [ei, ej, out])
    x = act2((x @ w2).view(p, n, 4, 4, -1) + conv2.bias)
    masks = hyper @ x.view(p, n * 16, -1).transpose(1, 2)  # (P, M, N*16); cuBLAS takes the transposed view
    h, w = grid
    m = masks.shape[1]
    masks = masks.view(p, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)  # row 4i+2di+ei, col 4j+2dj+ej
    return masks.reshape(p, m, 4 * h, 4 * w)


def decode_points(net, dtype: torch.dtype, ctx: CropContext, owner: torch.Tensor,
                  coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multimask decoding of single positive points. owner: (P,) crop index per prompt; coords:
    (P, 2) in the prompt frame. Returns low-res logits (P, 3, 4h, 4w) and predicted IoUs (P, 3)."""
    pe_module, dec = net.prompt_encoder, net.mask_decoder
    labels = torch.ones((coords.shape[0], 1), dtype=torch.int, device=coords.device)
    sparse, _ = pe_module(points=(coords[:, None, :], labels), boxes=None, masks=None)
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0).to(dtype)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse.to(dtype)], dim=1)

    layers = dec.transformer.layers
    queries, keys = _first_block(layers[0], ctx, owner, tokens)
    for block in layers[1:]:
        queries, keys = _block(block, queries, keys, tokens, ctx.pe)
    final = dec.transformer.final_attn_token_to_image
    attn_out = _attend(final, final.q_proj(queries + tokens), final.k_proj(keys + ctx.pe), final.v_proj(keys))
    queries = dec.transformer.norm_final_attn(queries + attn_out)

    mask_tokens = queries[:, 1:1 + dec.num_mask_tokens]
    multimask = range(1, dec.num_mask_tokens)  # token 0 is the single-mask output
    hyper = torch.stack([dec.output_hypernetworks_mlps[i](mask_tokens[:, i]) for i in multimask], dim=1)
    masks = _upscaled_masks(dec, keys, hyper, ctx.grid)
    iou = dec.iou_prediction_head(queries[:, 0])
    return masks, iou[:, 1:]
