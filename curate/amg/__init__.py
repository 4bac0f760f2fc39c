"""Batched, GPU-resident automatic mask generation for SAM-family models (SAM, EfficientViT-SAM).

Same masks as the reference generators (segment_anything.SamAutomaticMaskGenerator and
EfficientViT-SAM's), computed differently: every crop of every image is encoded in one batched
pass, point prompts of all crops are decoded together, and thresholding, stability scores, boxes,
NMS and uncropping stay on the device. Only boxes, areas and scores (and masks, when asked) leave it.
This package needs torch only (no pydantic, no Ray), so it runs anywhere torch does; its names are
imported on first use, so ``curate.amg.params`` loads without torch.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["AmgParams", "BatchedMaskGenerator", "ImageMasks"]
_HOMES = {"AmgParams": "curate.amg.params", "BatchedMaskGenerator": "curate.amg.generator",
          "ImageMasks": "curate.amg.generator"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'curate.amg' has no attribute {name!r}")
