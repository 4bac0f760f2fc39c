"""Caption stage: each region of a natural image gets an MLLM caption, of a document its OCR text.

A kind whose captioner is ``none`` leaves captions empty and says why in ``caption_skipped``: no text
is ever invented. MLLM crops from every image of a batch are captioned together. With the ``vllm``
backend the natural-image half runs in ray.data.llm instead (``caption_requests`` / ``merge_captions``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from curate import backends
from curate.backends.types import Captioner, CaptionResult
from curate.config import GlobalCaptionConfig, NoCaptionConfig, PipelineConfig, VlmConfig
from curate.ops.hygiene import clean_generation
from curate.ops.images import decode_many, decode_rgb
from curate.rows import add_events, set_model


def runs_in_ray_llm(kind_cfg) -> bool:
    return isinstance(kind_cfg, VlmConfig) and kind_cfg.runs_in_ray_llm


def record_results(regions: list[dict], results: list[CaptionResult], source: str, model: str) -> Counter:
    """Write captions (or why there is none) into regions; returns the outcome counts."""
    outcomes = Counter()
    for region, result in zip(regions, results, strict=True):
        outcomes["generated_tokens"] += result.tokens
        if result.text:
            region.update(caption=result.text, caption_source=source, caption_model=model)
            outcomes["captioned"] += 1
        else:
            region["caption_skipped"] = result.dropped
            outcomes[f"dropped.{result.reason}"] += 1
    return outcomes


def global_view_config(natural: VlmConfig, view: GlobalCaptionConfig) -> VlmConfig:
    """The natural captioner's settings for a caption of the whole image: its own prompt, pixel
    budget, length and hygiene, no context margin or thumbnail (the crop is the image)."""
    return natural.model_copy(update={
        "prompt": view.prompt, "max_pixels": view.max_pixels, "min_pixels": min(natural.min_pixels, view.max_pixels),
        "max_new_tokens": view.max_new_tokens, "hygiene": view.hygiene, "thumbnail": False, "context_margin": 0.0})


class CaptionStage:
    name = "caption"
    # Rows of other kinds pass through untouched. Global captions are written by the stage that
    # captions natural images, for every row.
    kinds: tuple[str, ...] = ("natural", "document")

    def __init__(self, cfg: PipelineConfig):
        self.captioners: dict[str, Captioner] = {}
        self.skip_reasons = {}
        for kind in self.kinds:
            kind_cfg = getattr(cfg.caption, kind)
            if isinstance(kind_cfg, NoCaptionConfig):
                self.skip_reasons[kind] = kind_cfg.reason
            elif not runs_in_ray_llm(kind_cfg):
                self.captioners[kind] = backends.build(kind_cfg)
        self.deferred = {kind for kind in self.kinds if runs_in_ray_llm(getattr(cfg.caption, kind))}
        self.global_mode = cfg.caption.global_.mode if "natural" in self.kinds else None
        self.global_captioner = None
        if self.global_mode == "mllm":  # the config allows it only with an hf MLLM for natural images
            self.global_captioner = self.captioners["natural"].with_config(
                global_view_config(cfg.caption.natural, cfg.caption.global_))

    def process(self, rows: list[dict]) -> list[dict]:
        batched: list[tuple[dict, list[dict]]] = []  # rows whose crops go to one batched model call
        one_by_one: list[tuple[dict, list[dict], Captioner]] = []  # rows captioned alone (OCR)
        for row in rows:
            if row["status"] != "ok" or row["kind"] not in self.kinds or row["kind"] in self.deferred:
                continue
            regions = json.loads(row["regions"])
            if not regions:
                continue
            kind = row["kind"]
            captioner = self.captioners.get(kind)
            if captioner is None:
                for region in regions:
                    region["caption_skipped"] = f"{kind} captioning skipped: {self.skip_reasons[kind]}"
                self._finish(row, regions, Counter(skipped=len(regions)))
            elif captioner.batched:
                batched.append((row, regions))
            else:
                one_by_one.append((row, regions, captioner))
        # OCR runs on the CPU (onnxruntime releases the GIL) while the MLLM batch keeps the GPU busy;
        # one after the other, a batch's pages made the GPU wait for as long as the OCR took.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr") as pool:
            done = pool.submit(self._caption_one_by_one, one_by_one)
            if batched:
                self._caption_batched(batched)
            done.result()
        if self.global_mode is not None:
            self._global_captions([row for row in rows if row["status"] == "ok"])
        return rows

    def _caption_one_by_one(self, jobs: list[tuple[dict, list[dict], Captioner]]) -> None:
        for row, regions, captioner in jobs:
            lines = [r.get("text_lines") for r in regions] if any("text_lines" in r for r in regions) else None
            results = captioner.caption(decode_rgb(row["image"]), [tuple(r["box"]) for r in regions], lines)
            self._finish(row, regions, record_results(regions, results, captioner.source, captioner.describe()),
                         captioner)

    def _global_captions(self, rows: list[dict]) -> None:
        """caption.global: none clears the source's caption, mllm writes one for every image."""
        if self.global_mode == "none":
            for row in rows:
                row["global_caption"] = None
        if self.global_captioner is None or not rows:
            return
        images = decode_many([row["image"] for row in rows])
        requests = [(image, (0, 0, row["width"], row["height"])) for image, row in zip(images, rows)]
        for row, result in zip(rows, self.global_captioner.caption_batch(requests), strict=True):
            row["global_caption"], row["global_caption_skipped"] = result.text, result.dropped
            set_model(row, "caption.global", self.global_captioner.describe())
            add_events(row, self.name, Counter({"global_captioned" if result.text else
                                                f"global_dropped.{result.reason}": 1}))

    def _caption_batched(self, batched: list[tuple[dict, list[dict]]]) -> None:
        captioner = self.captioners["natural"]
        start = time.perf_counter()
        images = decode_many([row["image"] for row, _ in batched])
        requests = [(image, tuple(r["box"])) for image, (_, regions) in zip(images, batched) for r in regions]
        decoded = time.perf_counter()
        results = iter(captioner.caption_batch(requests))
        # where a call's time went, split evenly over its rows: decoding on the CPU, or crops and the model
        decode_ms, caption_ms = (round(1000 * seconds / len(batched))
                                 for seconds in (decoded - start, time.perf_counter() - decoded))
        for row, regions in batched:
            mine = [next(results) for _ in regions]
            outcomes = record_results(regions, mine, captioner.source, captioner.describe())
            outcomes.update(crops=len(regions), decode_ms=decode_ms, caption_ms=caption_ms)
            self._finish(row, regions, outcomes, captioner)

    def _finish(self, row: dict, regions: list[dict], outcomes: Counter, captioner=None) -> None:
        row["regions"] = json.dumps(regions)
        if captioner is not None:
            set_model(row, f"caption.{row['kind']}", captioner.describe())
        add_events(row, self.name, outcomes)


class NaturalCaptionStage(CaptionStage):
    """The GPU caption stage when pages are captioned in the documents stage."""

    kinds = ("natural",)


class DocumentCaptionStage(CaptionStage):
    """Pages' OCR captions, in the documents stage (CPU actors)."""

    name = "documents"
    kinds = ("document",)


# ---------------------------------------------------------------- vllm (ray.data.llm) half


def caption_requests(row: dict, cfg: VlmConfig) -> list[dict]:
    """Request rows for one image row: one per region of a natural image, else one carrier."""
    from curate.backends.llm_vllm import carrier_row, image_message, request_row, sampling_params
    from curate.ops.prompts import crop_images

    regions = json.loads(row["regions"] or "[]")
    if row["status"] != "ok" or row["kind"] != "natural" or not regions:
        return [carrier_row(row["uri"], row)]
    image = decode_rgb(row["image"])
    prompt = cfg.thumbnail_prompt if cfg.thumbnail else cfg.prompt
    params = sampling_params(cfg)
    return [
        request_row(row["uri"], i, len(regions), image_message(crop_images(cfg, image, tuple(r["box"])), prompt),
                    params, row if i == 0 else None)
        for i, r in enumerate(regions)
    ]


def merge_captions(row: dict, answers: list[tuple[str, int, bool]], cfg: VlmConfig) -> dict:
    """Put cleaned vLLM answers back into the image row (the inverse of ``caption_requests``)."""
    if not answers:
        return row
    regions = json.loads(row["regions"])
    results = [clean_generation(text, tokens, finished, cfg.hygiene) for text, tokens, finished in answers]
    model = f"vllm:{cfg.model}"
    outcomes = record_results(regions, results, "mllm", model)
    outcomes["crops"] += len(regions)
    row["regions"] = json.dumps(regions)
    set_model(row, "caption.natural", model)
    add_events(row, "caption", outcomes)
    return row
