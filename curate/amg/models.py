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

from curate.amg.decoder import CropContext, crop_context, decode_points
from curate.amg.grid import resized_shape
from curate.amg.mask_stats import triton_available
from curate.amg.resize import pil_resize_bilinear

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass
class SamFamilyModel:
    """``net`` has ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` (SAM's modules).

    encoder_size: side of the square image the encoder takes (1024 for SAM and XL models, 512 for L).
    prompt_size: side of the frame prompts and masks live in (1024 for both families).
    graphable_encoder: whether the image encoder's forward can be captured as a CUDA graph (it
    must not touch host tensors or wait for the device).
    """

    net: torch.nn.Module
    encoder_size: int
    prompt_size: int = 1024
    mask_threshold: float = 0.0
    graphable_encoder: bool = True

    @property
    def device(self) -> torch.device:
        return next(self.net.mask_decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.mask_decoder.parameters()).dtype

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> SamFamilyModel:
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
        return self._normalise_and_pad(torch.from_numpy(resized).permute(2, 0, 1).float())

    def preprocess_tensor(self, crop: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The same for a uint8 HWC crop tensor on any device (bit-identical resize, see resize.py),
        written into ``out`` ((3, S, S) float32, e.g. a slot of a batch) when given. On a GPU with
        Triton one fused kernel does it all (triton_preprocess.py)."""
        h, w = resized_shape(crop.shape[0], crop.shape[1], self.encoder_size)
        if triton_available(crop.device):
            from curate.amg.triton_preprocess import resize_normalise_pad

            return resize_normalise_pad(crop, h, w, self.encoder_size, PIXEL_MEAN, PIXEL_STD, out=out)
        x = self._normalise_and_pad(pil_resize_bilinear(crop, h, w))
        return x if out is None else out.copy_(x)

    def _normalise_and_pad(self, x: torch.Tensor) -> torch.Tensor:
        channels = [(x[c] - m) / s for c, (m, s) in enumerate(zip(PIXEL_MEAN, PIXEL_STD))]
        x = torch.stack(channels)
        return F.pad(x, (0, self.encoder_size - x.shape[2], 0, self.encoder_size - x.shape[1]))

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

    def decoder_context(self, embeddings: torch.Tensor) -> CropContext:
        """Prompt-independent decoder inputs of each crop, computed once per batch of crops."""
        return crop_context(self.net, embeddings, self.dtype)

    def decode(self, ctx: CropContext, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Multimask decoding of single positive points of one crop (``ctx.crop(i)``): coords
        (N, 2) points in the prompt frame. Returns low-res logits
        (N, 3, 4h, 4w) and predicted IoUs (N, 3). Runs in the model's dtype without autocast, so
        half-precision activations are not cast back and forth (see decoder.py)."""
        return decode_points(self.net, self.dtype, ctx, coords)


def sam_model(net: torch.nn.Module) -> SamFamilyModel:
    """Wrap a segment_anything ``Sam``. Its ViT builds the relative-position indices of every
    attention call on the CPU (get_rel_pos), a host-to-device copy that a CUDA graph cannot hold
    (and a failed capture leaves the process's CUDA random generator unusable): not graphed."""
    return SamFamilyModel(net=net, encoder_size=net.image_encoder.img_size, prompt_size=net.image_encoder.img_size,
                          graphable_encoder=False)


def efficientvit_sam_model(net: torch.nn.Module) -> SamFamilyModel:
    """Wrap an ``efficientsam`` EfficientViTSam (image_size = (prompt frame, encoder input))."""
    return SamFamilyModel(net=net, encoder_size=net.image_size[1], prompt_size=net.image_size[0])
