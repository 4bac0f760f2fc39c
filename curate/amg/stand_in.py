"""A stand-in for a trained SAM decoder: masks from a classical segmentation of the crop, for
benchmarks, tests and pipeline runs (``stand_in_masks: true``) where no trained checkpoint can be
loaded. Never for a real corpus: the boxes follow colour, not objects.

A random decoder's masks are pixel noise: every candidate straddles the threshold everywhere, one
mask survives NMS, and the reference generators spend almost all their time run-length encoding
noise. A trained SAM keeps a few hundred smooth masks of a natural photo. ``make_segmenting``
turns a randomly initialised model into one that behaves like the trained one where the cost is
decided (how many masks pass the filters, how smooth they are, how many survive NMS), while every
network layer still runs at its real size:

- the image encoder runs as is, then its first 48 output channels are replaced by the crop's
  colours at the decoder's low-res frame (3 x 256 x 256 pixels, packed 4 x 4 into 64 x 64 tokens);
- the mask decoder runs as is, then its logits are replaced by a colour-and-distance region around
  each prompt point at three scales (SAM's three multimask outputs), and its IoU predictions by a
  fixed value per output and point.

Both our generator (``SamFamilyModel.decode``) and the references (``prompt_encoder`` and
``mask_decoder`` modules, which ours does not call) are patched, with the same arithmetic, so
both do the work such masks cause and their outputs can be compared mask for mask.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from curate.amg.models import SamFamilyModel

LOW_RES = 256  # side of the decoder's low-res logits (4 x its 64 x 64 token grid)
PACK = 4  # low-res pixels per token side
CHANNELS = 3 * PACK * PACK  # embedding channels that carry the colours

# (colour distance, spatial radius as a fraction of the low-res side) of the three outputs: a
# part, an object, a large region. Chosen so that a natural photo at PS3's Table 10 settings keeps
# about 100-300 masks after NMS, as trained SAM does (benchmarks/amg.py reports the count).
SCALES = ((0.6, 0.2), (1.0, 0.4), (1.5, 0.8))
SHARPNESS = 12.0  # logits per unit of normalised distance: the +-1 stability band is a few pixels wide


def pack_colours(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) preprocessed crops -> (B, 48, 64, 64): their colours averaged down to the
    low-res frame and packed 4 x 4 per token."""
    factor = images.shape[-1] // LOW_RES
    colours = F.avg_pool2d(images.float(), factor) if factor > 1 else images.float()
    return F.pixel_unshuffle(colours, PACK)


def unpack_colours(tokens: torch.Tensor) -> torch.Tensor:
    """(1, >=48, 64, 64) embedding -> (3, 256, 256) low-res colours, float32."""
    return F.pixel_shuffle(tokens[:, :CHANNELS].float(), PACK)[0]


def region_logits(colours: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res logits (P, 3, S, S) and IoU predictions (P, 3), float32, for prompt points (P, 2)
    in the low-res frame's pixels: at each scale, positive where the colour is close to the
    point's and the pixel near it. Elementwise arithmetic only, so any batching of the points
    gives the same values."""
    side = colours.shape[-1]
    index = points.floor().long().clamp(0, side - 1)
    seed = colours[:, index[:, 1], index[:, 0]].T  # (P, 3)
    colour_distance = (colours[None] - seed[:, :, None, None]).square().sum(1).sqrt()  # (P, S, S)
    axis = torch.arange(side, device=colours.device, dtype=torch.float32) + 0.5
    dy = (axis[None, :] - points[:, 1:2]) / side
    dx = (axis[None, :] - points[:, 0:1]) / side
    spatial = dy.square()[:, :, None] + dx.square()[:, None, :]  # (P, S, S)
    logits = torch.stack([SHARPNESS * (1 - colour_distance / tau - spatial / radius ** 2)
                          for tau, radius in SCALES], dim=1)
    # a fixed ranking for NMS, no ties between points: larger outputs first, then a point's hash
    jitter = torch.frac(points[:, 0] * 0.618034 + points[:, 1] * 0.381966)
    iou = torch.stack([0.80 + 0.05 * j + 0.04 * jitter for j in range(len(SCALES))], dim=1)
    return logits, iou


def make_segmenting(model: SamFamilyModel) -> SamFamilyModel:
    """Patch ``model`` (in place) as the module docstring says; returns it."""
    net = model.net
    dim = net.prompt_encoder.embed_dim
    if dim < CHANNELS:
        raise ValueError(f"the embedding needs at least {CHANNELS} channels to carry the colours, has {dim}")
    prompt_scale = LOW_RES / model.prompt_size
    with torch.no_grad():  # ours adds the no-mask embedding to the image's, the references later
        net.prompt_encoder.no_mask_embed.weight[:, :CHANNELS] = 0

    encoder_forward = net.image_encoder.forward

    def encode_with_colours(self, images: torch.Tensor) -> torch.Tensor:
        embeddings = encoder_forward(images)
        return torch.cat([pack_colours(images).to(embeddings.dtype), embeddings[:, CHANNELS:]], dim=1)

    net.image_encoder.forward = types.MethodType(encode_with_colours, net.image_encoder)

    ours = model.decode

    def decode(ctx, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = ours(ctx, coords)  # the real network's work
        grid = ctx.grid
        tokens = ctx.src[:, :, :CHANNELS].transpose(1, 2).reshape(1, CHANNELS, *grid)
        regions, iou = region_logits(unpack_colours(tokens), coords.float() * prompt_scale)
        return regions.to(logits.dtype), iou.to(logits.dtype)

    model.decode = decode

    # the references: their predictor embeds the points, then calls the decoder
    prompt_forward = net.prompt_encoder.forward
    last_points: list[torch.Tensor] = []

    def embed_prompts(self, points, boxes, masks):
        last_points[:] = [points[0][:, 0, :]]  # (B, 2): one positive point per prompt
        return prompt_forward(points, boxes, masks)

    decoder_forward = net.mask_decoder.forward

    def decode_reference(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                         multimask_output):
        logits, _ = decoder_forward(image_embeddings=image_embeddings, image_pe=image_pe,
                                    sparse_prompt_embeddings=sparse_prompt_embeddings,
                                    dense_prompt_embeddings=dense_prompt_embeddings, multimask_output=multimask_output)
        regions, iou = region_logits(unpack_colours(image_embeddings[:1]), last_points[0].float() * prompt_scale)
        return regions.to(logits.dtype), iou.to(logits.dtype)

    net.prompt_encoder.forward = types.MethodType(embed_prompts, net.prompt_encoder)
    net.mask_decoder.forward = types.MethodType(decode_reference, net.mask_decoder)
    return model
