"""MLLM captions through transformers (Qwen2-VL / Qwen2.5-VL class): batched generate, bf16, SDPA.

Crops from many images are captioned together in batches of ``batch_size`` (prompts are left-padded).
"""

from __future__ import annotations

from PIL import Image

from curate.backends.hf_generate import (
    WARM_UP_BATCHES,
    compiles_decoding,
    generate_in_batches,
    generation_kwargs,
    pick_device,
    prepare_for_generation,
    resolve_dtype,
)
from curate.backends.types import CaptionResult
from curate.io.fs import local_if_there
from curate.ops.crops import Box
from curate.ops.hygiene import clean_generation
from curate.ops.images import map_images
from curate.ops.prompts import caption_messages, crop_images

PROMPT_TOKENS = 64  # chat template and instruction, about


class HfVlmCaptioner:
    source = "mllm"
    batched = True  # crops of many images share one generate() call

    def __init__(self, cfg, model=None, processor=None, grouped_decode: bool = True):
        """Loads ``cfg.model`` (HF id or local path) unless a model and processor are given.
        ``grouped_decode``: with sdpa, decode without copying the KV cache per query head (the same
        text; off only to measure it)."""
        self.cfg, self.grouped_decode = cfg, grouped_decode
        # prefill a batch's crops in groups of similar length, decode them as one batch
        # (curate/backends/split_prefill.py): on an H200 at 7B shapes it saved a quarter of the
        # memory and no time (0.94-1.01x, benchmarks/RESULTS.md), so off
        self.split_prefill = False
        loaded = model is None
        if loaded:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            device = pick_device()
            source = local_if_there(cfg.model)  # a relative folder: the driver's, on every node
            processor = AutoProcessor.from_pretrained(source)
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=resolve_dtype(cfg.dtype, device), attn_implementation=cfg.attn_implementation,
            ).to(device).eval()
        prepare_for_generation(model, cfg, grouped_decode)
        processor.tokenizer.padding_side = "left"
        self.model, self.processor = model, processor
        self.prompt_text = processor.apply_chat_template(caption_messages(cfg), add_generation_prompt=True,
                                                         tokenize=False)
        self.gen_kwargs = generation_kwargs(cfg, processor.tokenizer.pad_token_id)
        if loaded:
            self.warm_up()

    def warm_up(self) -> None:
        """Compile the decoding step now, when generate would compile it (``compiles_decoding``): a
        stage actor loads its model long before its first call fills (the masks of a call's images
        come first), so the compile's minute is spent while the actor would wait anyway."""
        if compiles_decoding(self.model, self.gen_kwargs):
            side = 2 * self.cfg.patch_factor  # the smallest crop the processor takes, grown to the pixel floor
            for rows in WARM_UP_BATCHES:
                crops = [[Image.new("RGB", (side * (8 + i), side * 8), (127, 127, 127))] for i in range(rows)]
                self.generate_crops(crops, max_new_tokens=4)

    def describe(self) -> str:
        return f"hf:{self.cfg.model}"

    def with_config(self, cfg) -> HfVlmCaptioner:
        """The same loaded model under other settings (prompt, pixel budget, length, hygiene)."""
        return HfVlmCaptioner(cfg, model=self.model, processor=self.processor, grouped_decode=self.grouped_decode)

    def generate_crops(self, crops: list[list[Image.Image]], **extra) -> list:
        """Raw generations for prepared crops (each a list of images in prompt order), batched by
        size (a crop's vision tokens grow with its pixels)."""
        return generate_in_batches(self.model, self.processor.tokenizer, crops, self.cfg, self._crop_tokens,
                                   self._inputs, {**self.gen_kwargs, **extra}, split_prefill=self.split_prefill)

    def _crop_tokens(self, crop: list[Image.Image]) -> int:
        # One vision token per patch_factor^2 pixels (Qwen2-VL: 14 px patches merged 2x2), plus the prompt.
        return sum(im.width * im.height for im in crop) // self.cfg.patch_factor ** 2 + PROMPT_TOKENS

    def _inputs(self, batch: list[list[Image.Image]]) -> dict:
        # The pixel budget goes with every call: a processor keeps the budget it was saved or built
        # with, and one built elsewhere (or shared with another budget, as the global view's is)
        # silently resized crops to it. Qwen2-VL reads it from size (shortest/longest_edge = pixels).
        return self.processor(text=[self.prompt_text] * len(batch), images=[im for c in batch for im in c],
                              padding=True, return_tensors="pt",
                              size={"shortest_edge": self.cfg.min_pixels, "longest_edge": self.cfg.max_pixels})

    def caption_batch(self, requests: list[tuple[Image.Image, Box]]) -> list[CaptionResult]:
        """Captions for (image, box) pairs, possibly from many images, cleaned by the hygiene rules."""
        crops = map_images(lambda request: crop_images(self.cfg, *request), requests)
        return [clean_generation(g.text, g.tokens, g.finished, self.cfg.hygiene) for g in self.generate_crops(crops)]

    def caption(self, image: Image.Image, boxes: list[Box], lines=None) -> list[CaptionResult]:
        # lines (text lines of document regions) are not needed: the MLLM reads the crop
        return self.caption_batch([(image, box) for box in boxes])
