"""SAM-family models behind one interface: preprocessing, image encoder, prompt encoder, decoder.

Both segment_anything's ``Sam`` and EfficientViT-SAM (the ``efficientsam`` package) use the same
prompt encoder and mask decoder; they differ in image encoder and input size. Preprocessing
reproduces the references' (PIL resize of the uint8 crop, normalise, pad bottom-right) so that
masks match theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from curate.amg.grid import resized_shape

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass
class SamFamilyModel:
    """``net`` has ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` (SAM's modules).

    encoder_size: side of the square image the encoder takes (1024 for SAM and XL models, 512 for L).
    prompt_size: side of the frame prompts and masks live in (1024 for both families).
    """

    net: torch.nn.Module
    encoder_size: int
    prompt_size: int = 1024
    mask_threshold: float = 0.0

    @property
    def device(self) -> torch.device:
        return next(self.net.mask_decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.mask_decoder.parameters()).dtype

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> "SamFamilyModel":
        """Move to ``device``; encoder and decoder in ``dtype``, the prompt encoder stays float32
        (point coordinates up to 1024 need more precision than bf16's 8 bits)."""
        self.net.to(device).eval()
        self.net.image_encoder.to(dtype)
        self.net.mask_decoder.to(dtype)
        self.net.prompt_encoder.float()
        return self

    def preprocess(self, crop: np.ndarray) -> torch.Tensor:
        """uint8 HWC crop -> normalised, padded (3, S, S) float32 tensor on the CPU."""
        h, w = resized_shape(crop.shape[0], crop.shape[1], self.encoder_size)
        resized = np.array(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR))
        x = torch.from_numpy(resized).permute(2, 0, 1).float()
        mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(3, 1, 1)
        x = (x - mean) / std
        return F.pad(x, (0, self.encoder_size - w, 0, self.encoder_size - h))

    def autocast(self):
        """Half-precision weights alone are not enough: some encoders (EfficientViT's attention)
        compute parts in float32 on purpose, so mixed inputs are reconciled by autocast."""
        enabled = self.dtype != torch.float32 and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed crops -> image embeddings with the no-mask prompt embedding
        already added (it is the same for every point prompt, so it is added once per crop)."""
        with self.autocast():
            embeddings = self.net.image_encoder(images.to(self.device, self.dtype))
        dense = self.net.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return embeddings.to(self.dtype) + dense.to(self.dtype)

    def decode(self, embeddings: torch.Tensor, owner: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Multimask decoding of single positive points from several crops at once.

        embeddings: (B, C, h, w) from ``encode``; owner: (N,) index into B per prompt; coords: (N, 2)
        points in the prompt frame. Returns low-res logits (N, 3, 4h, 4w) and predicted IoUs (N, 3).
        The same arithmetic as the reference decoder called once per crop, except that the
        positional encoding is broadcast instead of copied per prompt. Runs in the model's dtype
        without autocast, so half-precision activations are not cast back and forth.
        """
        pe, dec = self.net.prompt_encoder, self.net.mask_decoder
        labels = torch.ones((coords.shape[0], 1), dtype=torch.int, device=coords.device)
        sparse, _ = pe(points=(coords[:, None, :], labels), boxes=None, masks=None)
        sparse = sparse.to(self.dtype)
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        src = embeddings[owner]
        b, c, h, w = src.shape
        image_pe = pe.get_dense_pe().to(self.dtype).flatten(2).permute(0, 2, 1)  # (1, hw, C), broadcast
        hs, keys = self._two_way(dec.transformer, src.flatten(2).permute(0, 2, 1), image_pe, tokens)
        iou_out = hs[:, 0, :]
        mask_tokens = hs[:, 1 : 1 + dec.num_mask_tokens, :]
        upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        bu, cu, hu, wu = upscaled.shape
        masks = (hyper @ upscaled.view(bu, cu, hu * wu)).view(bu, -1, hu, wu)
        iou = dec.iou_prediction_head(iou_out)
        return masks[:, 1:], iou[:, 1:]  # multimask output: drop the single-mask token

    @staticmethod
    def _two_way(transformer, keys: torch.Tensor, key_pe: torch.Tensor, point_embedding: torch.Tensor):
        """TwoWayTransformer.forward on flattened image tokens with a broadcast positional encoding."""
        queries = point_embedding
        for layer in transformer.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)
        attn_out = transformer.final_attn_token_to_image(q=queries + point_embedding, k=keys + key_pe, v=keys)
        return transformer.norm_final_attn(queries + attn_out), keys

    def upscale(self, low_res: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
        """Low-res logits (N, 256, 256) -> logits at the crop's own resolution, as the references do:
        to the prompt frame, cut the padding, then to the crop size (bilinear both times)."""
        x = F.interpolate(low_res[:, None].float(), (self.prompt_size, self.prompt_size), mode="bilinear",
                          align_corners=False)
        h, w = resized_shape(crop_hw[0], crop_hw[1], self.prompt_size)
        x = x[..., :h, :w]
        return F.interpolate(x, crop_hw, mode="bilinear", align_corners=False)[:, 0]


def sam_model(net: torch.nn.Module) -> SamFamilyModel:
    """Wrap a segment_anything ``Sam``."""
    return SamFamilyModel(net=net, encoder_size=net.image_encoder.img_size, prompt_size=net.image_encoder.img_size)


def efficientvit_sam_model(net: torch.nn.Module) -> SamFamilyModel:
    """Wrap an ``efficientsam`` EfficientViTSam (image_size = (prompt frame, encoder input))."""
    return SamFamilyModel(net=net, encoder_size=net.image_size[1], prompt_size=net.image_size[0])
