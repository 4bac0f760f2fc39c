"""Prompts shared by the transformers and vLLM paths: what the captioner sees for a region, and the
chat messages of the captioner and the question writer."""

from __future__ import annotations

from PIL import Image

from curate.ops.crops import Box, prepare_crop, thumbnail_with_box


def caption_messages(cfg) -> list[dict]:
    """Chat messages for one crop (and, with ``thumbnail``, the whole image first)."""
    if cfg.thumbnail:
        content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": cfg.thumbnail_prompt}]
    else:
        content = [{"type": "image"}, {"type": "text", "text": cfg.prompt}]
    return [{"role": "user", "content": content}]


def crop_images(cfg, image: Image.Image, box: Box) -> list[Image.Image]:
    """What the model sees for one region, in prompt order."""
    crop = prepare_crop(image, box, cfg.context_margin, cfg.min_pixels, cfg.max_pixels, cfg.patch_factor)
    if not cfg.thumbnail:
        return [crop]
    return [thumbnail_with_box(image, box, cfg.thumbnail_side), crop]


def question_messages(caption: str, cfg) -> list[dict]:
    return [{"role": "system", "content": cfg.system_prompt},
            {"role": "user", "content": cfg.prompt.format(caption=caption)}]
