"""Selection scores (PS3 Fig. 4, stage 2): per low-res patch, how relevant it is to a text prompt
(top-down) or how salient by itself (bottom-up, a learned prompt).

Features come from several depths of the low-res pass (PS3 selects on layers spread over the ViT),
optionally joined by a light-weight convolutional encoder over the image at a higher resolution (PS3's
``highres_selection_feature``), whose score map is max-pooled onto the low-res grid and averaged in.
Scores are PS3's: cosine similarity of feature and prompt, times 5.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

COSINE_SCALE = 5.0


def spread_layers(depth: int, count: int = 4) -> list[int]:
    """``count`` layer indices spread from the first to the last (PS3: 0, 9, 18, 26 of 27)."""
    count = min(count, depth)
    return sorted({round(i * (depth - 1) / max(1, count - 1)) for i in range(count)})


class ConvBlock(nn.Module):
    """Depth-wise 7x7 conv, LayerNorm over channels, pointwise MLP, residual (a ConvNeXt block)."""

    def __init__(self, width: int):
        super().__init__()
        self.depthwise = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        return x + self.mlp(y).permute(0, 3, 1, 2)


class LightHighResEncoder(nn.Module):
    """Shallow conv net over the image at ``side`` px: one feature per patch (stride = patch)."""

    def __init__(self, patch: int, width: int, out_dim: int, side: int, depth: int = 2):
        super().__init__()
        self.side = side
        self.stem = nn.Conv2d(3, width, patch, stride=patch)
        self.blocks = nn.Sequential(*[ConvBlock(width) for _ in range(depth)])
        self.out = nn.Conv2d(width, out_dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.stem(images)))


def cosine_scores(features: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """(R, N, C) features and (R, C) prompts -> (R, N) scaled cosine similarities."""
    return COSINE_SCALE * (F.normalize(features, dim=-1) * F.normalize(prompts, dim=-1)[:, None]).sum(-1)


class SelectionHead(nn.Module):
    def __init__(self, hidden: int, depth: int, text_dim: int, dim: int, grid: int, patch: int,
                 hires_side: int | None, hires_width: int = 64):
        super().__init__()
        self.layers = spread_layers(depth)
        self.grid = grid
        self.features = nn.Linear(hidden * len(self.layers), dim)
        self.text = nn.Linear(text_dim, dim)
        self.prior = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.light = LightHighResEncoder(patch, hires_width, dim, hires_side) if hires_side else None
        if self.light is not None:
            self.text_hi = nn.Linear(text_dim, dim)
            self.prior_hi = nn.Parameter(torch.randn(dim) / math.sqrt(dim))

    def light_features(self, images: list[torch.Tensor]) -> torch.Tensor | None:
        """(B, H*W, C) features of the light encoder over each image squashed to its square side."""
        if self.light is None:
            return None
        side = self.light.side
        squares = torch.stack([F.interpolate(im[None].float(), size=(side, side), mode="bilinear",
                                             antialias=True, align_corners=False)[0] for im in images])
        feats = self.light(squares.to(self.light.stem.weight.dtype))
        return feats.flatten(2).transpose(1, 2)

    def scores(self, layer_outputs: list[torch.Tensor], light: torch.Tensor | None,
               text: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) bottom-up scores, or (R, N) top-down scores of texts (R, T) on images ``rows``."""
        feats = self.features(torch.cat([layer_outputs[i] for i in self.layers], dim=-1))
        if text is None:
            prompts, prompts_hi = self.prior.expand(len(feats), -1), None
            if light is not None:
                prompts_hi = self.prior_hi.expand(len(feats), -1)
        else:
            feats = feats[rows]
            light = light[rows] if light is not None else None
            prompts = self.text(text.to(self.text.weight.dtype))
            prompts_hi = self.text_hi(text.to(self.text.weight.dtype)) if light is not None else None
        scores = cosine_scores(feats, prompts)
        if light is not None:
            side = int(math.isqrt(light.shape[1]))
            hi = cosine_scores(light, prompts_hi).view(-1, 1, side, side)
            pooled = F.adaptive_max_pool2d(hi.float(), (self.grid, self.grid)).flatten(1)
            scores = (scores + pooled.to(scores.dtype)) / 2
        return scores
