"""A PS3-style vision encoder (Fig. 4) on a SigLIP ViT from transformers.

Stage 1: the low-res global view goes through the ViT (tokens + pooled global feature).
Stage 2: a light selection head scores every low-res patch, bottom-up (a learned query) or top-down
(conditioned on a text embedding).
Stage 3: the high-res view is patch-embedded at several scales (position embeddings interpolated);
for each region the patches inside its box are selected (ground-truth selection during
pre-training, as PS3's ablation recommends), encoded by the same ViT together with the image's
low-res tokens as context, and pooled into the region's local feature.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from curate.train.score_maps import box_score_map


def siglip_config(name: str, low_res: int):
    from transformers import SiglipVisionConfig

    if name == "tiny":
        return SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=low_res, patch_size=8)
    if name == "so400m":  # google/siglip-so400m-patch14-384's shapes
        return SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                  num_attention_heads=16, image_size=low_res, patch_size=14)
    return None


def build_vision(name: str, low_res: int):
    from transformers import SiglipVisionModel

    config = siglip_config(name, low_res)
    if config is not None:
        return SiglipVisionModel(config)
    return SiglipVisionModel.from_pretrained(name)  # a real checkpoint (HF id or local path)


def box_patch_indices(box_norm, grid: int, k: int) -> torch.Tensor:
    """k indices of patches (row-major on a grid x grid map) inside the box, spread evenly over it;
    repeated cyclically when the box covers fewer than k patches. Deterministic."""
    coverage = torch.from_numpy(box_score_map(box_norm, grid, grid)).flatten()
    inside = torch.nonzero(coverage > 0).flatten()
    if len(inside) == 0:  # degenerate box: the patch holding its centre
        x = min(grid - 1, int((box_norm[0] + box_norm[2]) / 2 * grid))
        y = min(grid - 1, int((box_norm[1] + box_norm[3]) / 2 * grid))
        inside = torch.tensor([y * grid + x])
    if len(inside) >= k:
        return inside[torch.linspace(0, len(inside) - 1, k).round().long()]
    return inside[torch.arange(k) % len(inside)]


class PS3Encoder(nn.Module):
    def __init__(self, vision_name: str, low_res: int, hi_res: int, hi_scales: list[float], select_k: int,
                 text_dim: int, embed_dim: int, low_res_context: bool = True):
        super().__init__()
        self.vit = build_vision(vision_name, low_res)
        self.vm = getattr(self.vit, "vision_model", self.vit)
        config = self.vit.config
        self.patch = config.patch_size
        self.grid = low_res // self.patch
        self.hi_grids = [max(1, round(hi_res * s / self.patch)) for s in hi_scales]
        self.select_k = select_k
        self.low_res_context = low_res_context
        d = config.hidden_size
        self.sel_mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.sel_text = nn.Linear(text_dim, d)
        self.sel_bottom_up = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.local_proj = nn.Linear(d, embed_dim)
        self.global_proj = nn.Linear(d, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    # ------------------------------------------------------------ stage 1: low-res

    def encode_low(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeds = self.vm.embeddings(pixels)
        hidden = self.vm.post_layernorm(self.vm.encoder(inputs_embeds=embeds).last_hidden_state)
        pooled = self.vm.head(hidden) if getattr(self.vm, "head", None) is not None else hidden.mean(1)
        return embeds, hidden, pooled

    # ------------------------------------------------------------ stage 2: selection

    def selection_logits(self, low_tokens: torch.Tensor, text_emb: torch.Tensor | None = None,
                         region_image: torch.Tensor | None = None) -> torch.Tensor:
        """Per-patch logits: (B, N) bottom-up, or (R, N) top-down for regions' texts."""
        feats = self.sel_mlp(low_tokens)
        d = feats.shape[-1]
        if text_emb is None:
            return feats @ self.sel_bottom_up / math.sqrt(d)
        query = self.sel_text(text_emb)
        return (feats[region_image] * query[:, None, :]).sum(-1) / math.sqrt(d)

    # ------------------------------------------------------------ stage 3: high-res

    def hi_tokens(self, pixels: torch.Tensor, grid: int) -> torch.Tensor:
        """Patch tokens of the high-res view at a grid x grid resolution, with interpolated positions."""
        side = grid * self.patch
        if pixels.shape[-1] != side:
            pixels = F.interpolate(pixels, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        emb = self.vm.embeddings
        tokens = emb.patch_embedding(pixels.to(emb.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        pos = emb.position_embedding.weight
        g0 = int(math.sqrt(pos.shape[0]))
        pos = pos.reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos.float(), size=(grid, grid), mode="bicubic", align_corners=False)
        return tokens + pos.to(tokens.dtype).flatten(2).transpose(1, 2)

    def encode_regions(self, hires: torch.Tensor, boxes: torch.Tensor, region_image: torch.Tensor,
                       low_embeds: torch.Tensor) -> torch.Tensor:
        """Local feature of each region: its selected multi-scale high-res patches, encoded with the
        image's low-res tokens as context, mean-pooled over the high-res tokens only."""
        selected = []
        for grid in self.hi_grids:
            tokens = self.hi_tokens(hires, grid)  # (B, grid*grid, D)
            index = torch.stack([box_patch_indices(b.tolist(), grid, self.select_k) for b in boxes.cpu()])
            index = index.to(tokens.device)
            selected.append(tokens[region_image[:, None], index])  # (R, k, D)
        hi = torch.cat(selected, dim=1)
        n_hi = hi.shape[1]
        sequence = torch.cat([low_embeds[region_image], hi], dim=1) if self.low_res_context else hi
        out = self.vm.post_layernorm(self.vm.encoder(inputs_embeds=sequence).last_hidden_state)
        return out[:, -n_hi:].mean(1)

    def forward(self, batch: dict, text_emb: torch.Tensor) -> dict:
        low_embeds, low_hidden, pooled = self.encode_low(batch["global"])
        local = self.encode_regions(batch["hires"], batch["boxes"], batch["region_image"], low_embeds)
        return {
            "local": F.normalize(self.local_proj(local).float(), dim=-1),
            "global": F.normalize(self.global_proj(pooled).float(), dim=-1),
            "text": F.normalize(self.text_proj(text_emb.to(self.text_proj.weight.dtype)).float(), dim=-1),
            "top_down": self.selection_logits(low_hidden, text_emb.to(low_hidden.dtype), batch["region_image"]),
            "bottom_up": self.selection_logits(low_hidden),
            "scale": self.logit_scale.exp(),
            "bias": self.logit_bias,
        }
