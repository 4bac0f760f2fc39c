"""SAM and EfficientViT-SAM automatic mask generation through curate.amg (GPU when present)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from curate.amg import AmgParams, BatchedMaskGenerator
from curate.amg.build import build_efficientvit_sam, build_sam
from curate.backends.types import MaskSet
from curate.config import DTYPE_NAMES, EfficientVitSamConfig, SamConfig
from curate.io.fs import local_if_there


def amg_params(cfg: SamConfig | EfficientVitSamConfig, device: str) -> AmgParams:
    return AmgParams(
        points_per_side=cfg.points_per_side,
        pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh, crop_n_layers=cfg.crop_n_layers, crop_nms_thresh=cfg.crop_nms_thresh,
        crop_n_points_downscale_factor=cfg.crop_n_points_downscale_factor,
        min_mask_region_area=cfg.min_mask_region_area,
        decode_batch=cfg.decode_batch if device == "cuda" else min(cfg.decode_batch, 64),
        compile_decoder=cfg.compile_decoder and device == "cuda",
        cuda_graphs=cfg.cuda_graphs,
    )


class SamFamilyMasks:
    """Loads the model once; ``generate`` takes a batch of images and returns one MaskSet each."""

    def __init__(self, cfg: SamConfig | EfficientVitSamConfig):
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # Half precision only where it is fast; CPU runs in float32.
        dtype = getattr(torch, DTYPE_NAMES[cfg.dtype]) if self.device == "cuda" else torch.float32
        build = build_sam if cfg.backend == "sam" else build_efficientvit_sam
        # a relative checkpoint names the driver's file on every node
        model = build(cfg.model, local_if_there(cfg.checkpoint))
        if cfg.stand_in_masks:
            from curate.amg.stand_in import make_segmenting

            make_segmenting(model)
        model = model.to(self.device, dtype)
        self.generator = BatchedMaskGenerator(model, amg_params(cfg, self.device))

    def describe(self) -> str:
        described = f"{self.cfg.backend}-{self.cfg.model} ({self.cfg.checkpoint}, {self.cfg.dtype} on {self.device})"
        return described + (" with stand-in masks (colour regions, not the model's)" if self.cfg.stand_in_masks else "")

    def generate(self, images: list[Image.Image]) -> list[MaskSet]:
        results = self.generator.generate([np.asarray(img.convert("RGB")) for img in images])
        return [MaskSet(boxes=r.boxes, areas=r.areas, scores=r.iou_preds) for r in results]
