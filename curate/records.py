"""What a run writes: one ImageRecord per sample (``KEY.json`` in the shards) and the run's Manifest.

Coordinates are absolute pixels of the stored (EXIF-oriented) image, ``[x0, y0, x1, y1]`` with x1/y1
exclusive; ``box_norm`` is the same box divided by width/height.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceRef(Record):
    uri: str = Field(..., description="where the input was read from (path, URI, or tar#member)")
    dataset: str


class Region(Record):
    box: tuple[int, int, int, int] = Field(..., description="xyxy absolute pixels, x1/y1 exclusive")
    box_norm: tuple[float, float, float, float] = Field(..., description="box / (w, h, w, h)")
    score: float = Field(..., description="saliency score from box selection (higher is more salient)")
    n_masks: int = Field(..., ge=0, description="masks whose centre lies in the box")
    mask_area_frac: float = Field(..., ge=0, description="summed mask area inside the box / box area")
    text_lines: list[list[tuple[float, float]]] | None = Field(
        None, description="documents: the text lines the region holds, top to bottom, each as four corner "
                          "points (x, y) clockwise from top-left; the caption is their OCR text, a line each")
    caption: str | None = None
    caption_source: Literal["mllm", "ocr"] | None = None
    caption_model: str | None = None
    caption_skipped: str | None = Field(None, description="why this region has no caption")
    question: str | None = Field(None, description="the caption retargeted into a question about this region")
    question_model: str | None = None
    question_skipped: str | None = Field(None, description="why this captioned region has no question")


class PipelineInfo(Record):
    name: str
    config_sha256: str
    curate_version: str
    models: dict[str, str] = Field(default_factory=dict, description="stage -> model/backend that ran")


class ImageRecord(Record):
    key: str = Field(..., pattern=r"^[0-9a-f]{20}$", description="first 20 hex digits of sha256")
    source: SourceRef
    width: int = Field(..., ge=1)
    height: int = Field(..., ge=1)
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of the input file's bytes")
    kind: Literal["natural", "document"]
    image_ext: Literal["jpg", "png", "webp"] = Field(..., description="member name of the stored image")
    reencoded: str | None = Field(None, description="why the stored bytes differ from the input, if they do")
    regions: list[Region] = Field(default_factory=list)
    regions_note: str | None = Field(None, description="why there are no regions, when there are none")
    global_caption: str | None = Field(None, description="a caption of the whole image (caption.global)")
    global_caption_skipped: str | None = Field(None, description="why caption.global: mllm left none")
    pipeline: PipelineInfo


class QuestionRecord(Record):
    """One top-down selection fine-tuning sample (``KEY.json`` in ``questions/`` shards)."""

    key: str = Field(..., pattern=r"^[0-9a-f]{20}_\d+$", description="IMAGEKEY_REGIONINDEX")
    image_key: str = Field(..., pattern=r"^[0-9a-f]{20}$")
    image_shard: str = Field(..., description="region shard holding the image (IMAGEKEY.EXT)")
    image_ext: Literal["jpg", "png", "webp"]
    region_index: int = Field(..., ge=0)
    question: str
    box: tuple[int, int, int, int] = Field(..., description="xyxy absolute pixels of the region asked about")
    box_norm: tuple[float, float, float, float]
    caption: str = Field(..., description="the local caption the question was written from (the answer's source)")
    model: str
    width: int = Field(..., ge=1)
    height: int = Field(..., ge=1)


class CanvasSource(Record):
    uri: str
    dataset: str
    id: str
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of the source file's bytes")
    width: int = Field(..., ge=1)
    height: int = Field(..., ge=1)


class CanvasRecord(Record):
    """One high-res alignment sample (``KEY.json`` in canvas shards): a low-res VQA image pasted on a canvas."""

    key: str = Field(..., pattern=r"^[0-9a-f]{20}$")
    source: CanvasSource
    width: int = Field(..., ge=1, description="canvas width")
    height: int = Field(..., ge=1)
    image_ext: Literal["png", "jpg"]
    box: tuple[int, int, int, int] = Field(..., description="where the source was pasted, xyxy, x1/y1 exclusive")
    box_norm: tuple[float, float, float, float]
    scale: float = Field(..., gt=0, description="pasted size / source size (1.0: pixels unchanged)")
    background: Literal["solid", "noise", "image"]
    conversations: list[dict[str, str]] = Field(..., description="inherited from the source, LLaVA form")
    seed: int


class QuarantineReason(str, Enum):
    unreadable = "unreadable"
    empty_file = "empty_file"
    too_large_file = "too_large_file"
    not_an_image = "not_an_image"
    unsupported_format = "unsupported_format"  # an image format curate knows but does not decode (PDF, raw)
    truncated = "truncated"
    decompression_bomb = "decompression_bomb"
    too_small = "too_small"
    too_large = "too_large"
    extreme_aspect = "extreme_aspect"
    unsupported_mode = "unsupported_mode"
    duplicate = "duplicate"
    stage_error = "stage_error"
    invalid_entry = "invalid_entry"


class QuarantineEntry(Record):
    uri: str
    reason: QuarantineReason
    detail: str


class StageStats(Record):
    rows: int = 0
    seconds: float = Field(0.0, description="summed worker time spent in the stage")
    counts: dict[str, int] = Field(default_factory=dict, description="what the stage did, by outcome")
    skipped: str | None = Field(None, description="set when the stage did not run, with the reason")
    rates: dict[str, float] = Field(
        default_factory=dict, description="throughput per second of worker time (crops, generated tokens)")


class Counts(Record):
    read: int = 0
    written: int = 0
    quarantined: int = 0
    regions: int = 0
    captioned_regions: int = 0


class Manifest(Record):
    name: str
    config: dict
    config_sha256: str
    curate_version: str
    versions: dict[str, str]
    status: Literal["running", "interrupted", "complete"]
    started_at: str
    finished_at: str | None = None
    wall_seconds: float = 0.0
    counts: Counts
    stages: dict[str, StageStats]
    quarantine_reasons: dict[str, int] = Field(
        default_factory=dict, description="quarantined inputs by reason (kept current while the run goes on)")
    shards: list[str] = Field(description="committed shard files; filled when the run is complete")
    quarantine: list[QuarantineEntry] = Field(
        description="every quarantined input with its reason; filled when the run is complete (also in "
                    "quarantine.parquet and the parts)")


SCHEMA_MODELS = {"image_record": ImageRecord, "manifest": Manifest, "question_record": QuestionRecord,
                 "canvas_record": CanvasRecord}
