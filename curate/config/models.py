"""Pipeline configuration models: one pydantic model per stage (loading is curate/config/loading.py).

Unknown keys are errors (``extra="forbid"``). Backend-specific settings are discriminated unions on
``backend``, so each backend accepts only its own keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Annotated, ClassVar, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from curate.amg.params import AmgParams
from curate.uris import storage_problem


def expand_home(value):
    """``~/x`` as the home folder's ``x``: a path in YAML, or in ``--output=~/x``, reaches curate
    with no shell to expand it. Only a leading ``~`` (a URI or a hub id never starts with one)."""
    return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value


# a local path (or a URI, or a hub id) as a config names it
PathText = Annotated[str, BeforeValidator(expand_home)]


def reachable_storage(path: str) -> str:
    """``path`` when it is local or on a filesystem curate has (not ``https://``: a config error then,
    rather than a traceback when the run first reads it)."""
    problem = storage_problem(path)
    if problem:
        raise ValueError(problem)
    return path


# where inputs are read or the output is written: a local path or a storage URI
StoragePath = Annotated[PathText, AfterValidator(reachable_storage)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


Fraction = Annotated[float, Field(gt=0, le=1)]

# Precision names in configs, and the dtype each one is in torch and vLLM: the one map of them.
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DtypeName = Literal["bf16", "fp16", "fp32"]


# ---------------------------------------------------------------- sources

ImageKind = Literal["natural", "document"]


class SourceConfig(Strict):
    """Where input images come from.

    ``dir``: every image file below ``path`` (recursive); ``glob``: files matching ``path``;
    ``list``: a ``.txt`` (one URI per line) or ``.parquet`` file with a ``column`` of URIs;
    ``webdataset``: tar shards (``path`` may be a glob), one input per image member;
    ``samples``: the generated offline sample set (documents and natural scenes) at ``path``.
    Local paths and ``s3://`` / ``gs://`` URIs go through pyarrow filesystems.
    """

    type: Literal["dir", "glob", "list", "webdataset", "samples"]
    path: StoragePath
    dataset: str | None = Field(None, description="name recorded in each record; defaults to the path's stem")
    kind: ImageKind | Literal["auto"] = Field(
        "auto", description="route every image of this source as natural/document; 'auto' uses the heuristic"
    )
    column: str = Field("uri", description="list sources in parquet: column holding the URIs")
    caption_column: str | None = Field(None, description="list sources in parquet: column with a global caption")
    count: int = Field(16, ge=1, description="samples sources: how many images to generate")


# ---------------------------------------------------------------- ingest


class IngestConfig(Strict):
    min_side: int = Field(256, ge=1, description="images whose shorter side is below this are quarantined")
    max_side: int = Field(16384, ge=1, description="images whose longer side is above this are quarantined")
    max_pixels: int = Field(
        178_956_970, ge=1, description="decompression-bomb guard (Pillow's own default limit x2)"
    )
    max_aspect_ratio: float = Field(12.0, gt=1, description="long/short side above this is quarantined")
    max_file_bytes: int = Field(512 * 1024 * 1024, ge=1, description="files larger than this are quarantined")
    read_timeout_s: float = Field(
        300.0, gt=0, description="an input whose read takes longer is quarantined (a stalled mount, a device)")
    document_white_fraction: float = Field(
        0.55, ge=0, le=1, description="heuristic: min share of near-white, unsaturated pixels for a document"
    )
    document_max_colorfulness: float = Field(
        0.12, ge=0, le=1, description="heuristic: max mean saturation for a document"
    )


# ---------------------------------------------------------------- masks


class SkimageMasksConfig(Strict):
    """CPU region proposals from scikit-image's Felzenszwalb graph segmentation (not SAM)."""

    backend: Literal["skimage_felzenszwalb"]
    # Where each backend name of this section is implemented ("module:Class"); the registry in
    # curate/backends reads these, so a backend's name lives only here.
    IMPLEMENTATIONS: ClassVar[dict[str, str]] = {
        "skimage_felzenszwalb": "curate.backends.masks_skimage:FelzenszwalbMasks"}
    work_side: int = Field(1024, ge=64, description="segment a copy downscaled so its long side is this")
    scale: float = Field(200.0, gt=0, description="felzenszwalb scale: larger gives larger segments")
    sigma: float = Field(0.8, ge=0)
    min_size: int = Field(30, ge=1, description="min segment size in pixels at work_side")
    max_area_frac: float = Field(0.25, gt=0, le=1, description="drop segments covering more of the image")


_AMG = AmgParams()  # the generator's defaults (PS3 Table 10): the one home of these numbers


class SamAmgParams(Strict):
    """Automatic-mask-generation arguments shared by the SAM family (defaults: curate.amg.params)."""

    IMPLEMENTATIONS: ClassVar[dict[str, str]] = {"sam": "curate.backends.masks_sam:SamFamilyMasks",
                                                 "efficientvit_sam": "curate.backends.masks_sam:SamFamilyMasks"}

    points_per_side: int = Field(_AMG.points_per_side, ge=1)
    crop_n_layers: int = Field(_AMG.crop_n_layers, ge=0)
    crop_n_points_downscale_factor: int = Field(_AMG.crop_n_points_downscale_factor, ge=1)
    pred_iou_thresh: float = _AMG.pred_iou_thresh
    stability_score_thresh: float = _AMG.stability_score_thresh
    min_mask_region_area: int = Field(_AMG.min_mask_region_area, ge=0, le=0,
                                      description="hole/island removal: only 0 (PS3) is supported")
    box_nms_thresh: float = _AMG.box_nms_thresh
    crop_nms_thresh: float = _AMG.crop_nms_thresh
    decode_batch: int = Field(_AMG.decode_batch, ge=1, description="most point prompts per decoder call; each call "
                                                                   "takes prompts of one crop, split into equal chunks "
                                                                   "(GPU; 576 = one call per crop at 24 points per "
                                                                   "side, about 11 GiB peak)")
    compile_decoder: bool = Field(_AMG.compile_decoder, description="torch.compile the mask decoder on the GPU (about "
                                                                    "15 s once per worker; a few percent faster since "
                                                                    "the fused kernels)")
    cuda_graphs: bool = Field(_AMG.cuda_graphs, description="replay the image encoder and the mask decoder as CUDA "
                                                            "graphs on the GPU, one per crop batch shape and per "
                                                            "prompt count (the host launches one graph instead of "
                                                            "hundreds of kernels per call); the decoder's is ignored "
                                                            "with compile_decoder; off on the CPU")

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data):
        if isinstance(data, dict) and "points_per_batch" in data:
            raise ValueError("points_per_batch was removed: it only sized the reference generator's prompt "
                             "batches and never changed a mask; decode_batch sets prompts per decoder call")
        return data


class SamFamilyModelConfig(SamAmgParams):
    """What the SAM and EfficientViT-SAM sections share beyond the generator's parameters."""

    stand_in_masks: bool = Field(False, description="benchmarks without a trained checkpoint only: every network "
                                                    "layer runs, but masks come from a colour-region segmentation "
                                                    "of each crop at each prompt (curate/amg/stand_in.py), smooth "
                                                    "and a few hundred per photo as a trained SAM's; the records "
                                                    "name it. Never for a real corpus")


class EfficientVitSamConfig(SamFamilyModelConfig):
    backend: Literal["efficientvit_sam"]
    model: Literal["l0", "l1", "l2", "xl0", "xl1"] = "xl1"
    checkpoint: PathText = Field(..., description="local path or HF id of the EfficientViT-SAM weights")
    dtype: DtypeName = "bf16"
    batch_size: int = Field(4, ge=1, description="images per GPU batch")
    num_gpus: float = Field(1.0, ge=0)


class SamConfig(SamFamilyModelConfig):
    backend: Literal["sam"]
    model: Literal["vit_b", "vit_l", "vit_h"] = "vit_h"
    checkpoint: PathText = Field(..., description="local path or HF id of the SAM weights")
    dtype: DtypeName = "bf16"
    batch_size: int = Field(2, ge=1)
    num_gpus: float = Field(1.0, ge=0)


class OcrLayoutMasksConfig(Strict):
    """Documents: RapidOCR's text detector finds text lines. ``regions: lines`` (the default) makes
    each region one line, or a few consecutive lines of one column, spread over the page, and the OCR
    captioner reads exactly those lines; ``windows`` counts lines as small masks in the selection's
    windows (``window_fracs``), grown to whole lines: text blocks, which may nest."""

    backend: Literal["ocr_layout"]
    IMPLEMENTATIONS: ClassVar[dict[str, str]] = {"ocr_layout": "curate.backends.layout_ocr:OcrLayoutRegions"}
    max_side: int = Field(2048, ge=256, description="the page is detected at this long side")
    regions: Literal["lines", "windows"] = "lines"
    lines_per_region: int = Field(1, ge=1, description="lines: consecutive lines of one column per region, at most")
    min_line_px: float = Field(6, ge=0, description="lines: detected lines less tall than this are specks, dropped")
    window_fracs: list[Fraction] = Field(
        [0.2, 0.35, 0.5], min_length=1, description="windows: selection windows for text blocks, as fractions of "
                                                    "the shorter side (text blocks are larger than small objects)")


MaskBackendConfig = Annotated[
    Union[SkimageMasksConfig, EfficientVitSamConfig, SamConfig, OcrLayoutMasksConfig], Field(discriminator="backend")
]


class MasksConfig(Strict):
    """Mask generation per image kind, like captions: ``document`` unset means the same as ``natural``."""

    natural: MaskBackendConfig
    document: MaskBackendConfig | None = Field(None, description="documents' backend; null: natural's")

    @model_validator(mode="before")
    @classmethod
    def _old_form(cls, data):
        if isinstance(data, dict) and "backend" in data:
            raise ValueError("masks is set per image kind now: write masks: {natural: {backend: "
                             f"{data['backend']}, ...}} (document defaults to the same; documents can use "
                             "backend: ocr_layout)")
        return data

    def for_kind(self, kind: str):
        return self.document if kind == "document" and self.document is not None else self.natural

    def sections(self) -> list:
        """The distinct backend sections in use (one when documents share natural's)."""
        return [self.natural] + ([self.document] if self.document is not None else [])

    @property
    def num_gpus(self) -> float:
        return max(getattr(section, "num_gpus", 0) for section in self.sections())

    @property
    def batch_size(self) -> int | None:
        return getattr(self.natural, "batch_size", None)


# ---------------------------------------------------------------- select


class SelectConfig(Strict):
    """Salient-box selection: windows dense in small masks (see curate/ops/select.py)."""

    max_boxes: int = Field(4, ge=0, description="boxes kept per image")
    window_fracs: list[Fraction] = Field(
        [0.12, 0.2, 0.3], min_length=1,
        description="candidate window sides as fractions of the image's shorter side (each in (0, 1])")
    stride_frac: float = Field(
        0.25, ge=0.02, le=1, description="window stride as a fraction of its side (below 0.02 the windows "
                                         "would number in the millions)")
    small_mask_frac: float = Field(0.01, gt=0, le=1, description="masks below this area fraction count fully")
    size_exponent: float = Field(
        0.5, ge=0, description="mask weight = (small_mask_frac / area_frac) ** -exponent above the threshold"
    )
    scale_penalty: float = Field(0.5, ge=0, le=1, description="score = weight sum / window_area_frac ** this")
    nms_iou: float = Field(0.2, ge=0, le=1, description="max IoU between two kept boxes")
    max_containment: float = Field(
        0.5, ge=0, le=1, description="max share of the smaller of two kept boxes that lies inside the other")
    spread: bool = Field(True, description="masks under and around a kept box stop counting, so the next box "
                                           "goes to another cluster")
    spread_margin: float = Field(1.0, ge=0, description="spread: the margin around a kept box, in its sides")
    min_masks: int = Field(3, ge=1, description="windows with fewer mask centres are not candidates")
    min_box_px: int = Field(64, ge=1, description="boxes are grown to at least this side")
    tighten: bool = Field(True, description="shrink each window to the union of its masks' boxes")
    expand_to_members: bool = Field(
        False, description="instead, grow each window to the union of its masks' boxes (whole text lines)")

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data):
        moved = {"document_regions", "layout_max_side", "layout_window_fracs"} & set(data or {})
        if moved:
            raise ValueError(f"{', '.join(sorted(moved))} moved: text-line regions for documents are a mask "
                             "backend now: masks: {document: {backend: ocr_layout, max_side: 2048, "
                             "window_fracs: [0.2, 0.35, 0.5]}}")
        return data


# ---------------------------------------------------------------- caption


class NoCaptionConfig(Strict):
    """No captioner: regions keep no caption and the stage records that it was skipped, and why."""

    backend: Literal["none"] = "none"
    IMPLEMENTATIONS: ClassVar[dict[str, str]] = {}
    reason: str = "no captioning model configured"


class RapidOcrConfig(Strict):
    backend: Literal["rapidocr"]
    IMPLEMENTATIONS: ClassVar[dict[str, str]] = {"rapidocr": "curate.backends.ocr_rapid:RapidOcrCaptioner"}
    min_score: float = Field(0.5, ge=0, le=1, description="drop recognised lines below this confidence")
    max_side: int = Field(2048, ge=64, description="crops larger than this are downscaled before OCR")


class CaptionHygieneConfig(Strict):
    """Rules applied to every generated caption; a caption failing one is dropped with the rule's name."""

    strip_openers: list[str] = Field(
        [r"^(the|this) (image|picture|photo|photograph|region|crop|area|section)( region)? "
         r"(shows|depicts|displays|features|contains|presents|captures|is of)\b",
         r"^in (this|the) (image|picture|photo|region|crop),?"],
        description="regexes removed from the start of a caption (boilerplate openers)",
    )
    refusal_patterns: list[str] = Field(
        [r"\bI('m| am) (sorry|unable)", r"\bI can(no|')t (see|help|determine|identify|provide)",
         r"\bas an AI\b", r"\bunable to (see|determine|identify|read)\b", r"\bnot possible to (see|tell)\b"],
        description="regexes that mark a refusal (the caption is dropped)",
    )
    trim_unfinished: bool = Field(True, description="cut text that hit max_new_tokens back to its last sentence")
    keep_unfinished: bool = Field(False, description="keep text that hit max_new_tokens as it is, neither trimmed "
                                                      "nor dropped (overrides trim_unfinished)")
    min_words: int = Field(3, ge=0)
    max_words: int = Field(400, ge=1)
    ngram: int = Field(4, ge=1, description="n for the repetition check")
    max_repeated_ngram_frac: float = Field(0.3, ge=0, le=1, description="share of repeated n-grams that is a loop")
    max_sentence_repeats: int = Field(2, ge=1, description="one sentence more often than this is a loop")
    min_latin_letter_frac: float | None = Field(
        0.8, ge=0, le=1, description="language guard: min share of Latin-script letters; null turns it off")


class GenerationRuntimeConfig(Strict):
    """How a generative model is loaded and run (shared by the caption and retarget backends)."""

    backend: str
    # vllm runs as ray.data.llm processor stages (curate/pipeline.py), not as an object in an actor.
    RAY_LLM_BACKEND: ClassVar[str] = "vllm"

    @property
    def runs_in_ray_llm(self) -> bool:
        return self.backend == self.RAY_LLM_BACKEND

    @property
    def runs_in_actor(self) -> bool:
        return self.backend in self.IMPLEMENTATIONS

    model: PathText | None = Field(None, description="HF id or local checkpoint directory")
    dtype: DtypeName = "bf16"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 is greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(16, ge=1, description="prompts per generate call (hf) / per vLLM batch")
    # 262144: a caption call of 64 images (about 180 crops) decodes as one batch; at 131072 its few
    # largest crops made a second batch that cost a whole decode loop (1.55x slower on an H200).
    max_batch_tokens: int | None = Field(
        262144, ge=1, description="hf: a generate call's padded tokens, prompts plus new tokens, at most "
        "(bounds its KV cache and activations; a batch that runs out of GPU memory runs again in halves; "
        "null: batch_size alone)")
    kv_cache: Literal["dynamic", "static"] = Field(
        "dynamic", description="hf: the KV cache of generate; 'static' preallocates it at the batch's full length, "
        "which lets transformers compile the decoding step, once per actor at load (minutes for a 7B model); "
        "it speeds the decode loop only (captions 1.06-1.08x on an H200, where prefill is most of a call)")
    compile: bool = Field(True, description="hf with kv_cache static: compile the decoding step (torch.compile)")
    num_gpus: float = Field(1.0, ge=0, description="GPUs per actor when the cluster has GPUs")
    # vLLM only (ray.data.llm): engine replicas, tensor parallelism, memory.
    concurrency: int = Field(1, ge=1, description="vllm: engine replicas")
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int = Field(8192, ge=256)


class VlmConfig(GenerationRuntimeConfig):
    """MLLM captioner (Qwen2-VL / Qwen2.5-VL class) through transformers (hf) or ray.data.llm (vllm)."""

    backend: Literal["hf", "vllm"]
    IMPLEMENTATIONS: ClassVar[dict[str, str]] = {"hf": "curate.backends.vlm_hf:HfVlmCaptioner"}
    model: PathText = Field(..., description="HF id or local checkpoint directory")
    prompt: str = "Describe in detail everything visible in this image region, including any text."
    min_pixels: int = Field(256 * 28 * 28, ge=28 * 28, description="crop pixel budget, lower bound")
    max_pixels: int = Field(1280 * 28 * 28, ge=28 * 28, description="crop pixel budget, upper bound")
    patch_factor: int = Field(28, ge=1, description="crop sides are multiples of this (Qwen2-VL: 28)")
    context_margin: float = Field(0.05, ge=0, description="box margin as a fraction of its side")
    thumbnail: bool = Field(False, description="also show a thumbnail of the whole image with the box drawn")
    thumbnail_side: int = Field(448, ge=28)
    thumbnail_prompt: str = (
        "The first image is the whole picture with one region outlined in red; the second image is that "
        "region. Describe in detail everything visible in the region, including any text."
    )
    hygiene: CaptionHygieneConfig = Field(default_factory=CaptionHygieneConfig)


NaturalCaptionConfig = Annotated[Union[NoCaptionConfig, VlmConfig], Field(discriminator="backend")]
DocumentCaptionConfig = Annotated[Union[NoCaptionConfig, RapidOcrConfig], Field(discriminator="backend")]


class GlobalCaptionConfig(Strict):
    """A caption of the whole image, for the trainer's global contrast (PS3 Fig. 5a): ``source`` takes
    it from the source's caption column (parquet sources), ``mllm`` has the natural-image MLLM (hf
    backend) describe the image downscaled to ``max_pixels``, with its own prompt and hygiene; ``none``
    writes none."""

    mode: Literal["none", "source", "mllm"] = "source"
    prompt: str = "Describe this image in detail: the scene, the main objects and any text."
    max_pixels: int = Field(1280 * 28 * 28, ge=28 * 28, description="the whole image is downscaled to this")
    max_new_tokens: int = Field(256, ge=1)
    hygiene: CaptionHygieneConfig = Field(default_factory=CaptionHygieneConfig)


class CaptionConfig(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    natural: NaturalCaptionConfig = Field(default_factory=NoCaptionConfig)
    document: DocumentCaptionConfig = Field(default_factory=NoCaptionConfig)
    global_: GlobalCaptionConfig = Field(default_factory=GlobalCaptionConfig, alias="global")

    @model_validator(mode="after")
    def _global_needs_an_mllm(self):
        if self.global_.mode == "mllm":
            natural = self.natural
            if not isinstance(natural, VlmConfig):
                raise ValueError("caption.global.mode: mllm uses the natural-image MLLM, but caption.natural has "
                                 "none (set caption.natural to an hf backend with a model, or caption.global.mode "
                                 "to source or none)")
            if natural.runs_in_ray_llm:
                raise ValueError("caption.global.mode: mllm runs with caption.natural.backend: hf only (not yet "
                                 "through vllm); use hf, or caption.global.mode: source/none")
        return self


# ---------------------------------------------------------------- retarget


class QuestionRulesConfig(Strict):
    """Checks on a generated question; a failing question is dropped with the rule's name."""

    min_words: int = Field(4, ge=1)
    max_words: int = Field(40, ge=1)
    forbidden_patterns: list[str] = Field(
        [r"\d+\s*,\s*\d+\s*,\s*\d+", r"\bcaption\b", r"\bdescription\b", r"\bbounding box\b",
         r"\bcoordinates?\b", r"\bthe (text|passage) above\b"],
        description="regexes a question must not match (box coordinates, leaks of the prompt's wording)",
    )
    max_caption_overlap: float = Field(
        0.8, ge=0, le=1, description="max share of the question's words found in the caption, in order (a copy)")
    reject_answer_leaks: bool = Field(
        True, description="drop a question that contains the caption's distinctive content: its numbers, quoted "
                          "or capitalised text (sign text), proper names (the answer, given away)")
    generic_patterns: list[str] = Field(
        [r"^(is|are) there (an? |any |some )?\w+( \w+)?\?$", r"^what (is|can you see|do you see) (in|on) (this|the) "
         r"(image|picture|photo|region|area)\?$", r"^what (is|are) (shown|visible|depicted)( here)?\?$",
         r"^describe (this|the) (image|picture|region)"],
        description="regexes (case-insensitive) of generic questions that any image answers")
    min_specific_words: int = Field(
        1, ge=0, description="content words a question must share with its caption (it is about this region)")
    same_script: bool = Field(
        True, description="the question must be written in the caption's script (Latin, CJK, Cyrillic, ...): an "
                          "English caption retargeted into a Chinese question is dropped")


class RetargetConfig(GenerationRuntimeConfig):
    """LLM (Llama-3.1-8B-Instruct class) that rewrites local captions into questions about the region
    (top-down selection fine-tuning data)."""

    backend: Literal["none", "hf", "vllm"] = "none"
    IMPLEMENTATIONS: ClassVar[dict[str, str]] = {"hf": "curate.backends.llm_hf:HfQuestionWriter"}
    system_prompt: str = (
        "You write one question about a small region of a large image. The question must be answerable only "
        "by looking closely at that region. Reply with the question alone."
    )
    prompt: str = (
        "Here is a description of the region:\n{caption}\n\nWrite one question whose answer is found in "
        "this region."
    )
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(32, ge=1)
    max_model_len: int = Field(4096, ge=256)
    rules: QuestionRulesConfig = Field(default_factory=QuestionRulesConfig)
    embed_image: bool = Field(False, description="question shards carry the image bytes (else the image key)")

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @model_validator(mode="after")
    def _model_for_backend(self) -> RetargetConfig:
        if self.backend != "none" and not self.model:
            raise ValueError(f"retarget backend {self.backend!r} needs a model (HF id or local path)")
        if "{caption}" not in self.prompt:
            raise ValueError("retarget.prompt must contain {caption}")
        return self


# ---------------------------------------------------------------- output and runtime


class OutputConfig(Strict):
    path: StoragePath = Field("out/run", min_length=1, description="output directory: a local path, or a URI on object "
                                                            "storage (s3://bucket/prefix, gs://bucket/prefix)")
    split: str = Field("train", pattern=r"^[A-Za-z0-9_]+$")
    shard_max_samples: int = Field(1000, ge=1, description="close a shard after this many samples")
    shard_max_bytes: int = Field(1_000_000_000, ge=1, description="close a shard once it reaches this size")
    shard_max_seconds: float = Field(300.0, gt=0, description="close a shard this long after its first sample, so "
                                                              "long runs commit steadily")

    @field_validator("path")
    @classmethod
    def _not_blank(cls, path: str) -> str:
        if not path.strip():
            raise ValueError("output.path is empty")
        return path


class CorpusOutputConfig(OutputConfig):
    """The corpus pipeline's output: also how its images are stored."""

    writers: Literal["auto", "stream", "blocks"] = Field(
        "auto", description="stream: a few writer actors beside the driver keep a shard open across batches and "
                            "close it on samples, bytes or shard_max_seconds (steady commits at any rate); blocks: "
                            "writers on the workers turn each block of shard_max_samples rows into shards (no node "
                            "takes in every image, but a shard waits for its block); auto: stream on one node, "
                            "blocks on a cluster of several")

    image_format: Literal["keep", "jpg", "png", "webp"] = Field(
        "keep", description="keep: each image's own bytes (re-encoded only when they must change); jpg/png/webp: "
                            "every image in that format, one format per corpus (HF datasets' webdataset builder "
                            "needs it)")
    image_quality: int = Field(95, ge=1, le=100, description="JPEG/WebP quality when images are re-encoded")


class RayConfig(Strict):
    address: str | None = Field(None, description="Ray cluster address; None starts local Ray")
    node_ip_address: str | None = Field(
        None, description="the driver's address in the cluster, when Ray's guess is wrong (multi-homed "
                          "machines, clusters on loopback addresses)")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only: CPUs to use (default: all)")
    num_gpus: int | None = Field(None, ge=0, description="local Ray only: GPUs to use (default: all visible)")
    ingest_batch_size: int = Field(8, ge=1)
    cpu_batch_size: int = Field(4, ge=1, description="batch size of the CPU model stages")
    max_concurrency: int | None = Field(None, ge=1, description="upper bound on actors per CPU stage")
    actors_per_gpu: int = Field(1, ge=1, description="upper bound on a GPU stage's actors per GPU, whatever its "
                                                     "num_gpus share (each actor loads its own model)")
    ledger_actors: int | None = Field(None, ge=1, description="actors that hold the run's committed inputs and "
                                                               "content keys, split by hash (default: one per 8 "
                                                               "CPUs, 1 to 16)")
    progress: bool = True
    progress_log_every_s: float = Field(30.0, gt=0, description="when the output is not a terminal (a log file, a "
                                                                 "cluster job's output), a plain progress line every "
                                                                 "so many seconds instead of the bar")
    verbose: bool = Field(False, description="show Ray Data's periodic status on the console (always in Ray's "
                                             "session log, /tmp/ray/session_*/logs/ray-data)")


class PipelineRayConfig(RayConfig):
    """A corpus run's Ray settings: those of every run, and the pacing of its stages."""

    masks_lead_calls: int | None = Field(
        None, ge=2, description="pace the mask stage: it waits before a batch while this many caption calls' "
                                "worth of its rows (caption.natural.batch_size / select.max_boxes images a "
                                "call, at least one call per caption actor plus one) have not come back from "
                                "an hf caption stage, so that on a shared GPU it fills the captions' idle time "
                                "instead of racing ahead and leaving them alone at the end (None: unpaced)")


class PipelineConfig(Strict):
    name: str
    description: str = ""
    sources: list[SourceConfig] = Field(..., min_length=1)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    masks: MasksConfig
    select: SelectConfig = Field(default_factory=SelectConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    retarget: RetargetConfig = Field(default_factory=RetargetConfig)
    output: CorpusOutputConfig = Field(default_factory=CorpusOutputConfig)
    ray: PipelineRayConfig = Field(default_factory=PipelineRayConfig)

    @model_validator(mode="after")
    def _retarget_after_captions(self) -> PipelineConfig:
        if self.retarget.runs_in_actor and getattr(self.caption.natural, "runs_in_ray_llm", False):
            raise ValueError("retarget.backend: hf cannot follow caption.natural.backend vllm (the captions "
                             "arrive only at the end of the stream); use vllm for both")
        if self.ray.masks_lead_calls is not None and not getattr(self.caption.natural, "runs_in_actor", False):
            raise ValueError(f"ray.masks_lead_calls paces the masks by an hf caption stage, and "
                             f"caption.natural.backend {self.caption.natural.backend} runs none; unset it or use hf")
        return self

    def sha256(self) -> str:
        """Hash of what shapes the data; runs with different hashes must not share an output.

        Where the output lives and how Ray runs (address, CPUs, progress) do not change a sample,
        so they are left out: moving an output or resuming on a cluster keeps the hash.
        """
        return data_hash(self)


def data_hash(cfg: BaseModel) -> str:
    """sha256 of a config without its ``ray`` settings and ``output.path`` (they change no sample)."""
    data = cfg.model_dump(mode="json", exclude={"ray": True, "output": {"path"}})
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def backend_names() -> set[str]:
    """Every backend name a config can give (the ``backend`` literals of every section's classes)."""
    names = set()
    for union in (MaskBackendConfig, NaturalCaptionConfig, DocumentCaptionConfig):
        for cls in get_args(get_args(union)[0]):
            names |= set(get_args(cls.model_fields["backend"].annotation))
    return names | set(get_args(RetargetConfig.model_fields["backend"].annotation))


__all__ = [
    "CaptionConfig", "CaptionHygieneConfig", "CorpusOutputConfig", "DTYPE_NAMES", "DocumentCaptionConfig", "DtypeName",
    "EfficientVitSamConfig", "Fraction", "GenerationRuntimeConfig", "GlobalCaptionConfig", "ImageKind", "IngestConfig",
    "MaskBackendConfig", "MasksConfig", "NaturalCaptionConfig", "NoCaptionConfig", "OcrLayoutMasksConfig",
    "OutputConfig", "PathText", "PipelineConfig", "PipelineRayConfig", "QuestionRulesConfig", "RapidOcrConfig",
    "RayConfig",
    "RetargetConfig", "SamAmgParams", "SamConfig", "SelectConfig", "SkimageMasksConfig",
    "SourceConfig", "Strict", "VlmConfig", "backend_names", "data_hash",
]
