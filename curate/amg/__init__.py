"""Batched, GPU-resident automatic mask generation for SAM-family models (SAM, EfficientViT-SAM).

Same masks as the reference generators (segment_anything.SamAutomaticMaskGenerator and
EfficientViT-SAM's), computed differently: every crop of every image is encoded in one batched
pass, point prompts of all crops are decoded together, and thresholding, stability scores, boxes,
NMS and uncropping stay on the device. Only boxes, areas and scores (and masks, when asked) leave it.
This package needs torch only (no pydantic, no Ray), so it runs anywhere torch does.
"""

from curate.amg.generator import AmgParams, BatchedMaskGenerator, ImageMasks

__all__ = ["AmgParams", "BatchedMaskGenerator", "ImageMasks"]
