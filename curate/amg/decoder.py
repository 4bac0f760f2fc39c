"""SAM's mask decoder for many point prompts on a few crops: the reference arithmetic, reorganised.

The reference decoder runs once per batch of prompts of one crop and copies the crop's image
embedding (64x64x256) and positional encoding for every prompt. Here:

- what does not depend on the prompt is computed once per crop: the first block's image-side
  projections (keys and values of token-to-image attention, queries of image-to-token attention);
- cross-attention between the image (4096 tokens) and the prompt's 7 tokens is reassociated so
  that no per-prompt projection of the image tokens is made: image-to-token attention folds the
  query projection into the 7 keys and the output projection into the 7 values ((N x 256) @
  (256 x 56) and (N x 56) @ (56 x 256) instead of four N x 256 x 128 products); on CUDA one fused
  Triton kernel (triton_attention.py) does that attention, the residual and the LayerNorm per image
  token (half precision; float32 runs take the same arithmetic in torch ops). Token-to-image
  attention folds the key projection into the queries and applies the value projection after the
  weighted sum, so one attention of head width 256 reads the image tokens once; in half precision
  on CUDA a Triton flash-attention kernel takes the positional encoding's product with the queries
  beside the image tokens' (image tokens + pe are never stored), elsewhere SDPA takes them
  materialised. Softmax in float32, as SDPA computes it. Same arithmetic up to rounding order;
- the remaining (token-only) attention runs through ``scaled_dot_product_attention``;
- the output upscaling (two stride-2 2x2 transposed convolutions with LayerNorm and GELU) is per
  pixel: on CUDA one fused Triton kernel (triton_upscale.py) takes each pixel from the transformer's
  output to its 16 x 3 mask logits; elsewhere it runs as matrix products on channels-last
  "sub-pixel" tensors, and only the three final masks (not 32 channels) are shuffled back. In half
  precision the kernel's GELU is its tanh form in packed float16 arithmetic on the hardware tanh
  (within 1e-3 (1 + |x|) of the erf form), feeding float16 products; it is a torch.library custom
  op, opaque to torch.compile;
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

    def crop(self, index: int) -> CropContext:
        """The context of one crop (C = 1), what ``decode_points`` takes."""
        pick = slice(index, index + 1)
        return CropContext(src=self.src[pick], pe=self.pe, first_t2i_keys=self.first_t2i_keys[pick],
                           first_t2i_values=self.first_t2i_values[pick],
                           first_i2t_queries=self.first_i2t_queries[pick], grid=self.grid)


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


def _heads(linear, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Projected tokens split into heads: (P, T, D) -> (P, T, H, D'/H)."""
    y = linear(x)
    return y.view(*y.shape[:-1], heads, -1)


SLOTS = 8  # token slots per head in the image-to-token operands: the prompt's 7 tokens, padded


def _block_diagonal(x: torch.Tensor) -> torch.Tensor:
    """(P, S, H, d) per-head token vectors -> (P, H*S, H*d), zero but for its diagonal blocks:
    [p, h*S + s, h*d + j] = x[p, s, h, j]. Multiplied by a projection's (H*d, D) weight it applies
    each head's slice of the weight to that head's tokens only: one matrix product whose output
    is already in (head, token) order, where a per-head einsum needs reordering copies."""
    p, s, h, d = x.shape
    out = x.new_zeros((p, h, s, h, d))
    torch.diagonal(out, dim1=1, dim2=3).copy_(x.permute(0, 1, 3, 2))
    return out.view(p, h * s, h * d)


def _image_to_token_operands(attn, token_keys: torch.Tensor, token_values: torch.Tensor,
                             projected_queries: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM's Attention(q = image tokens, k = v = the prompt's tokens) as three per-prompt operands,
    each head's tokens padded to SLOTS: logits = image queries @ folded + bias, softmax per head,
    output = weights @ values + out_proj bias.

    projected_queries: the image queries are already projected (first block, shared per crop:
    folded is block-diagonal, (H*d, H*S)); else they are image tokens (+ pe) and the query
    projection is folded into the keys ((D, H*S)). Values carry the output projection. The
    padding slots are zero keys and values with bias -inf. folded is a transposed view (the
    kernel and torch's products take it as it is)."""
    heads = attn.num_heads
    k = _heads(attn.k_proj, token_keys, heads)  # (P, T, H, d)
    p, t, _, d = k.shape
    scale = d**-0.5
    pad = (0, 0, 0, 0, 0, SLOTS - t)
    k = F.pad(k, pad)  # (P, S, H, d)
    slot_bias = torch.zeros(SLOTS, dtype=torch.float32, device=k.device)
    slot_bias[t:] = float("-inf")
    slot_bias = slot_bias.repeat(heads)
    if projected_queries:
        folded = _block_diagonal(k * scale).transpose(1, 2)
        bias = slot_bias.expand(p, -1)
    else:
        keys = _block_diagonal(k)  # (P, H*S, H*d)
        folded = (keys @ (attn.q_proj.weight * scale)).transpose(1, 2)
        bias = (keys @ attn.q_proj.bias).float() * scale + slot_bias
    v = F.pad(_heads(attn.v_proj, token_values, heads), pad)
    values = _block_diagonal(v) @ attn.out_proj.weight.t()  # (P, H*S, D)
    return folded, bias, values


def image_to_token_torch(queries: torch.Tensor, residual: torch.Tensor, folded: torch.Tensor, bias: torch.Tensor,
                         values: torch.Tensor, out_bias: torch.Tensor, norm, pe: torch.Tensor | None = None,
                         add_pe: bool = False) -> torch.Tensor:
    """What triton_attention.image_to_token_block computes, in torch ops (any device): norm(residual
    + attention) for image queries (P or 1, N, DQ) and the operands above; softmax in float32."""
    if add_pe:
        queries = queries + pe
    logits = (queries @ folded).float() + bias[:, None, :]
    p, n, hs = logits.shape
    probs = logits.view(p, n, hs // SLOTS, SLOTS).softmax(-1).view(p, n, hs).to(values.dtype)
    return norm(residual + torch.baddbmm(out_bias, probs, values))


def _image_to_token(norm, attn, queries: torch.Tensor, residual: torch.Tensor, token_keys: torch.Tensor,
                    token_values: torch.Tensor, pe: torch.Tensor, add_pe: bool, projected_queries: bool
                    ) -> torch.Tensor:
    """Image-to-token attention, residual and ``norm`` for every prompt: new image tokens (P, N, D).
    On CUDA one fused Triton kernel (triton_attention.py) does it all per image token."""
    operands = _image_to_token_operands(attn, token_keys, token_values, projected_queries)
    # half precision only: the kernel's float32 build (3xTF32 products) failed on an H100 with an
    # illegal memory access, so float32 (parity runs) takes the torch form
    if _fused_available(queries) and queries.dtype in (torch.bfloat16, torch.float16):
        from curate.amg.triton_attention import TOKENS_PER_PROGRAM, image_to_token_block

        if residual.shape[1] % TOKENS_PER_PROGRAM == 0:
            return image_to_token_block(queries, residual, *operands, attn.out_proj.bias, norm, SLOTS, pe=pe,
                                        add_pe=add_pe)
    return image_to_token_torch(queries, residual, *operands, attn.out_proj.bias, norm, pe=pe, add_pe=add_pe)


def _fused_available(image: torch.Tensor) -> bool:
    """The fused kernels run on CUDA with Triton, for real SAM sizes (N a multiple of 128, D >= 128)."""
    from curate.amg.mask_stats import triton_available

    return triton_available(image.device) and image.shape[1] % 128 == 0 and image.shape[-1] >= 128


def _token_to_image(attn, token_queries: torch.Tensor, image: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """SAM's Attention(q = tokens, k = image tokens + pe, v = image tokens) for (P, N, D) image
    tokens and pe (N, D), with the key projection folded into the queries and the value projection
    applied after the weighted sum, so one attention with head width D does the rest (see the
    module doc). The key bias adds a constant to each query's logits, which softmax ignores."""
    heads = attn.num_heads
    q = _heads(attn.q_proj, token_queries, heads)  # (P, T, H, d)
    p, t, _, d = q.shape
    folded = _block_diagonal(q) @ (attn.k_proj.weight * d**-0.5)  # (P, H*T, D), head-major rows
    if _fused_available(image) and image.dtype in (torch.bfloat16, torch.float16):
        from curate.amg.triton_attention import token_to_image_attention

        mixed = token_to_image_attention(folded, image, pe)
    else:
        mixed = F.scaled_dot_product_attention(folded[:, None], (image + pe)[:, None], image[:, None],
                                               scale=1.0)
    # every head's rows through the whole value projection (8x the products of the per-head ones,
    # a few MFLOP per prompt), of which each head keeps its own slice: no reordering of ``mixed``
    every = (mixed.view(p, heads * t, -1) @ attn.v_proj.weight.t()).view(p, heads, t, heads, d)
    out = torch.diagonal(every, dim1=1, dim2=3).permute(0, 1, 3, 2).reshape(p, t, heads * d) + attn.v_proj.bias
    return attn.out_proj(out)


def _first_block(block, ctx: CropContext, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TwoWayAttentionBlock.forward for keys = one crop's embedding, its image-side work done once.
    Returns queries and keys."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=tokens, k=tokens, v=tokens)
    else:
        q = tokens + tokens
        queries = tokens + block.self_attn(q=q, k=q, v=tokens)
    queries = block.norm1(queries)

    # token-to-image: the prompts share keys and values, so their tokens form one query sequence
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    q = t2i.q_proj(queries + tokens)
    p, t, c = q.shape
    heads = t2i.num_heads
    qh = q.reshape(1, p * t, heads, c // heads).transpose(1, 2)
    kh = ctx.first_t2i_keys.view(1, -1, heads, c // heads).transpose(1, 2)
    vh = ctx.first_t2i_values.view(1, -1, heads, c // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(p, t, c)
    queries = block.norm2(queries + t2i.out_proj(out))
    queries = block.norm3(queries + block.mlp(queries))

    # image-to-token: the crop's projected image queries meet each prompt's keys
    keys = _image_to_token(block.norm4, i2t, ctx.first_i2t_queries, ctx.src, queries + tokens, queries, ctx.pe[0],
                           add_pe=False, projected_queries=True)
    return queries, keys


def _block(block, queries: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor, pe: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """TwoWayAttentionBlock.forward (not the first), pe (N, D)."""
    q = queries + tokens
    queries = block.norm1(queries + _attend(block.self_attn, *(p(x) for p, x in zip(
        (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj), (q, q, queries)))))
    t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    queries = block.norm2(queries + _token_to_image(t2i, queries + tokens, keys, pe))
    queries = block.norm3(queries + block.mlp(queries))
    keys = _image_to_token(block.norm4, i2t, keys, keys, queries + tokens, queries, pe, add_pe=True,
                           projected_queries=False)
    return queries, keys


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


def fused_upscale_available(keys: torch.Tensor, hyper: torch.Tensor) -> bool:
    """The fused kernel runs on CUDA with Triton, for tensor-core-sized channels (real SAM widths)."""
    return _fused_available(keys) and hyper.shape[-1] >= 16


def point_tokens(pe_module, coords: torch.Tensor) -> torch.Tensor:
    """PromptEncoder's sparse embedding of one positive point per prompt, (P, 2, D): the point's
    positional encoding plus the positive-point embedding, then the padding point (label -1: its
    encoding is zeroed and the not-a-point embedding added), as the reference pads point-only prompts.
    Written without the reference's boolean-mask assignments, which torch.compile cannot trace."""
    point = pe_module.pe_layer.forward_with_coords(coords[:, None, :] + 0.5, pe_module.input_image_size)
    point = point + pe_module.point_embeddings[1].weight
    pad = pe_module.not_a_point_embed.weight.expand(point.shape[0], 1, -1)
    return torch.cat([point, pad], dim=1)


def decode_points(net, dtype: torch.dtype, ctx: CropContext, coords: torch.Tensor,
                  fused_upscale: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multimask decoding of single positive points of one crop (``CropContext.crop``): coords
    (P, 2) in the prompt frame. Returns low-res logits (P, 3, 4h, 4w) and predicted IoUs (P, 3).
    fused_upscale: the Triton upscaling kernel (default: where it runs, see fused_upscale_available)."""
    pe_module, dec = net.prompt_encoder, net.mask_decoder
    sparse = point_tokens(pe_module, coords)
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0).to(dtype)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse.to(dtype)], dim=1)

    layers = dec.transformer.layers
    queries, keys = _first_block(layers[0], ctx, tokens)
    for block in layers[1:]:
        queries, keys = _block(block, queries, keys, tokens, ctx.pe[0])
    final = dec.transformer.final_attn_token_to_image
    attn_out = _token_to_image(final, queries + tokens, keys, ctx.pe[0])
    queries = dec.transformer.norm_final_attn(queries + attn_out)

    mask_tokens = queries[:, 1:1 + dec.num_mask_tokens]
    multimask = range(1, dec.num_mask_tokens)  # token 0 is the single-mask output
    hyper = torch.stack([dec.output_hypernetworks_mlps[i](mask_tokens[:, i]) for i in multimask], dim=1)
    if fused_upscale is None:
        fused_upscale = fused_upscale_available(keys, hyper)
    if fused_upscale:
        from curate.amg.triton_upscale import upscaled_masks_triton

        masks = upscaled_masks_triton(dec.output_upscaling, keys, hyper, ctx.grid)
    else:
        masks = _upscaled_masks(dec, keys, hyper, ctx.grid)
    iou = dec.iou_prediction_head(queries[:, 0])
    return masks, iou[:, 1:]
