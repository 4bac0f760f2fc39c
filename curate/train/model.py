"""A PS3-style vision encoder (PS3 Fig. 4) on a SigLIP ViT from transformers.

Stage 1: the square low-res view goes through the ViT; every layer's keys and values are kept.
Stage 2: selection scores per low-res patch, top-down (a text prompt) or bottom-up (a learned prompt),
from several depths of stage 1 and, optionally, a light-weight high-res conv encoder.
Stage 3: for each captioned region, the top-k patches of each native-aspect high-res scale are chosen
from its top-down scores (in training, PS3 puts the box's patches first: ``select_gt_prob``), embedded
with resampled plus scale-aware position embeddings, and encoded by the same ViT with the low-res KV
cache as context; the tokens inside the box are pooled into the region's local feature.
``scheme: uhd`` replaces stage 3 with LLaVA-UHD's slices (curate.train.uhd).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from curate.train.attention import encode_with_cache, encode_with_context
from curate.train.geometry import box_in_slice, scale_grids
from curate.train.patches import embed_patches, resize_view
from curate.train.score_maps import box_score_map
from curate.train.selection import choose_patches, patch_pool_weights, resample_scores
from curate.train.selection_head import SelectionHead
from curate.train.uhd import UHDScheme


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


def normalise(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> SigLIP's [-1, 1] floats; float input is taken as already normalised."""
    return image.float() / 127.5 - 1.0 if image.dtype == torch.uint8 else image


def box_coverage(boxes: torch.Tensor, rows: int, cols: int, device) -> torch.Tensor:
    """(R, rows*cols): the share of each patch inside each box."""
    maps = np.stack([box_score_map(b, rows, cols).reshape(-1) for b in boxes.tolist()]) if len(boxes) else \
        np.zeros((0, rows * cols))
    return torch.from_numpy(maps).to(device=device, dtype=torch.float32)


def in_row_order(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows computed image by image (row ``order[i]`` at position i) put back in row order."""
    out = torch.empty_like(values)
    out[order] = values
    return out


def chosen_rows(chosen: list[torch.Tensor]) -> list[tuple[list[int], ...]]:
    """Per region, the indices chosen at each scale (host lists, for evaluation and pictures)."""
    return list(zip(*[scale.tolist() for scale in chosen]))


class PS3Encoder(nn.Module):
    def __init__(self, m, text_dim: int):
        """``m``: a TrainModelConfig."""
        super().__init__()
        self.vit = build_vision(m.vision, m.low_res)
        self.vm = getattr(self.vit, "vision_model", self.vit)
        config = self.vit.config
        self.patch = config.patch_size
        self.grid = m.low_res // self.patch
        self.hi_res, self.hi_scales, self.select_k = m.hi_res, list(m.hi_scales), m.select_k
        self.context = m.low_res_context
        self.select_gt_prob = m.select_gt_prob
        self.pool_gt_only = m.pool_gt_only
        d = config.hidden_size
        self.selector = SelectionHead(d, config.num_hidden_layers, text_dim, m.select_dim, self.grid, self.patch,
                                      m.hires_selection_side or None)
        n_pos = self.vm.embeddings.position_embedding.weight.shape[0]
        self.scale_pos = (nn.Parameter(torch.zeros(len(self.hi_scales), n_pos, d))
                          if m.scale_pos_embed else None)
        self.uhd = (UHDScheme(self.vm, self.patch, m.low_res, m.uhd.max_slices, m.uhd.compress, m.uhd.queries)
                    if m.scheme == "uhd" else None)
        self.local_proj = nn.Linear(d, m.embed_dim)
        self.global_proj = nn.Linear(d, m.embed_dim)
        self.text_proj = nn.Linear(text_dim, m.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    # ------------------------------------------------------------ stage 1: low-res

    def encode_low(self, pixels: torch.Tensor) -> dict:
        embeds = self.vm.embeddings(pixels)
        last, layers, cache = encode_with_cache(self.vm.encoder, embeds)
        hidden = self.vm.post_layernorm(last)
        pooled = self.vm.head(hidden) if getattr(self.vm, "head", None) is not None else hidden.mean(1)
        return {"embeds": embeds, "layers": layers, "cache": cache, "hidden": hidden, "pooled": pooled}

    # ------------------------------------------------------------ stage 3: high-res, PS3

    def choose(self, scores: torch.Tensor, coverage: torch.Tensor, use_gt: torch.Tensor) -> torch.Tensor:
        forced = (coverage > 0) & use_gt[:, None]
        return choose_patches(scores, self.select_k, forced)

    def select_tokens(self, image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
                      use_gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One image's regions: (r, K, D) tokens of the chosen patches over all scales, (r, K) pooling
        weights, and each scale's chosen indices."""
        height, width = image.shape[-2:]
        tokens, weights, chosen = [], [], []
        for s, (rows, cols) in enumerate(scale_grids(width, height, self.hi_res, self.hi_scales, self.patch)):
            view = resize_view(image, rows, cols, self.patch)
            coverage = box_coverage(boxes, rows, cols, image.device)
            index = self.choose(resample_scores(scores, rows, cols), coverage, use_gt)
            residual = self.scale_pos[s] if self.scale_pos is not None else None
            tokens.append(embed_patches(self.vm.embeddings, view, index, residual))
            weights.append(patch_pool_weights(coverage, index) if self.pool_gt_only
                           else torch.ones_like(index, dtype=torch.float32))
            chosen.append(index)
        return torch.cat(tokens, 1), torch.cat(weights, 1), chosen

    def encode_tokens(self, tokens: torch.Tensor, image_of_row: torch.Tensor, low: dict) -> torch.Tensor:
        encoder = self.vm.encoder
        if self.context == "kv_cache":
            out = encode_with_context(encoder, tokens, low["cache"], image_of_row)
        elif self.context == "tokens":  # low-res tokens re-encoded beside the high-res ones
            out = encode_with_context(encoder, torch.cat([low["embeds"][image_of_row], tokens], 1), None)
            out = out[:, -tokens.shape[1]:]
        else:
            out = encode_with_context(encoder, tokens, None)
        return self.vm.post_layernorm(out)

    def encode_regions(self, images, boxes, image_of_row, scores, low) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Local features (R, D) of regions ``boxes`` on images ``image_of_row`` from their scores, and
        the patches chosen at each scale, (R, k) per scale (``chosen_rows`` lists them per region)."""
        use_gt = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
        if self.training and self.select_gt_prob > 0:
            use_gt = torch.rand(len(boxes), device=boxes.device) < self.select_gt_prob
        order, tokens, weights, chosen = [], [], [], []
        for i in image_of_row.unique().tolist():
            rows = (image_of_row == i).nonzero().flatten()
            t, w, c = self.select_tokens(images[i], boxes[rows], scores[rows].view(len(rows), self.grid, self.grid),
                                         use_gt[rows])
            order.append(rows)
            tokens.append(t)
            weights.append(w)
            chosen.append(c)
        order_t = torch.cat(order)
        out = self.encode_tokens(torch.cat(tokens), image_of_row[order_t], low)
        w = torch.cat(weights).to(out.dtype)
        pooled = (out * w[..., None]).sum(1) / w.sum(1, keepdim=True)
        return in_row_order(pooled, order_t), [in_row_order(torch.cat(per_image), order_t)
                                               for per_image in zip(*chosen)]

    # ------------------------------------------------------------ stage 3: high-res, LLaVA-UHD

    def encode_regions_uhd(self, images, boxes, image_of_row) -> tuple[torch.Tensor, torch.Tensor]:
        """Local features: the slice tokens inside each box; global features: the mean of each image's
        schema sequence (overview, compressed slices and separators)."""
        local: list[torch.Tensor] = [None] * len(boxes)
        sequences = []
        for i, image in enumerate(images):
            views = self.uhd.views(image)
            sequences.append(self.uhd.sequence(views).mean(0))
            height, width = image.shape[-2:]
            parts = (list(zip(views.slices, views.slice_grids, views.slice_px)) or
                     [(views.overview, views.overview_grid, (0, 0, width, height))])
            for r in (image_of_row == i).nonzero().flatten().tolist():
                tokens, weights = [], []
                for hidden, (rows, cols), px in parts:
                    inner = box_in_slice(boxes[r].tolist(), px, width, height)
                    if inner is not None:
                        weights.append(torch.tensor(box_score_map(inner, rows, cols).reshape(-1), device=hidden.device))
                        tokens.append(hidden)
                if not weights:  # a degenerate box: the overview stands in
                    tokens, weights = [views.overview], [torch.ones(len(views.overview), device=image.device)]
                w = torch.cat(weights).to(tokens[0].dtype)
                local[r] = (torch.cat(tokens) * w[:, None]).sum(0) / w.sum().clamp(min=1e-6)
        return (torch.stack(local) if local else None), torch.stack(sequences)

    # ------------------------------------------------------------ all stages

    def forward(self, batch: dict, text_emb: torch.Tensor) -> dict:
        images = [normalise(im) for im in batch["hires"]]
        low = self.encode_low(batch["global"])
        light = self.selector.light_features(images)
        rows = batch["region_image"]
        text_emb = text_emb.to(low["hidden"].dtype)
        top_down = self.selector.scores(low["layers"], light, text_emb, rows)
        bottom_up = self.selector.scores(low["layers"], light)
        is_global = batch["is_global"]
        local_rows = (~is_global).nonzero().flatten()
        image_global = low["pooled"]
        chosen, local = [], None
        if self.uhd is not None:
            local, image_global = self.encode_regions_uhd(images, batch["boxes"][local_rows], rows[local_rows])
        elif len(local_rows):
            local, chosen = self.encode_regions(images, batch["boxes"][local_rows], rows[local_rows],
                                                top_down[local_rows], low)
        features = self.global_proj(image_global[rows]).float()
        if len(local_rows):
            features = features.index_copy(0, local_rows, self.local_proj(local).float())
        return {
            "image": F.normalize(features, dim=-1),
            "text": F.normalize(self.text_proj(text_emb.to(self.text_proj.weight.dtype)).float(), dim=-1),
            "top_down": top_down,
            "bottom_up": bottom_up,
            "chosen": chosen,
            "scale": self.logit_scale.exp(),
            "bias": self.logit_bias.clone(),  # an output that is a bare parameter confuses DDP's hooks
        }
