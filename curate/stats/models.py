"""stats.json: what `curate stats` computes (schema in schemas/corpus_stats.schema.json)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from curate.records import Counts


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceRow(Model):
    dataset: str
    kind: str
    images: int
    boxes: int
    captioned: int


class BucketRow(Model):
    """Images of one kind in one resolution bucket (by the longer side)."""

    kind: str
    bucket: str
    images: int
    boxes: int
    boxes_per_image: float
    avg_box_w: float | None
    avg_box_h: float | None


class Table9Row(Model):
    """PS3 Table 9, for comparison (millions of images and boxes; box size as printed there)."""

    source: str
    kind: str
    bucket: str
    images_m: float | None
    boxes_m: float | None
    boxes_per_image: float | None
    avg_box_size: str | None


class Histogram(Model):
    edges: list[float]
    counts: list[int]
    unit: str = ""


class CaptionStats(Model):
    regions: int
    captioned: int
    by_source: dict[str, int] = Field(..., description="captioned regions by caption_source (mllm, ocr)")
    words_mean: float | None
    dropped: dict[str, int] = Field(..., description="regions left uncaptioned, by reason")
    global_captions: int = Field(0, description="images with a caption of the whole image (caption.global)")
    global_words_mean: float | None = None


class QuestionStats(Model):
    asked: int = Field(..., description="captioned regions sent to the retarget LLM")
    kept: int = Field(..., description="questions that passed validation (in questions/ shards)")
    dropped: dict[str, int] = Field(..., description="rejected questions, by rule")
    words_mean: float | None
    shards: int


class StageRow(Model):
    stage: str
    rows: int
    seconds: float
    rows_per_second: float | None
    time_share: float | None = Field(..., description="share of the summed stage seconds")
    skipped: str | None
    rates: dict[str, float] = Field(default_factory=dict, description="crops/s, prompts/s, generated tokens/s")


class CorpusStats(Model):
    name: str
    output: str
    status: str
    wall_seconds: float
    counts: Counts
    per_source: list[SourceRow]
    buckets: list[BucketRow]
    ps3_table9: list[Table9Row]
    histograms: dict[str, Histogram]
    captions: CaptionStats
    questions: QuestionStats | None = Field(None, description="set when a retarget LLM ran")
    quarantine_reasons: dict[str, int]
    stages: list[StageRow]
    gallery: list[str] = Field(default_factory=list, description="gallery PNG files beside the report")


class CanvasStats(Model):
    """stats.json of a canvas-augmentation output (`curate augment canvas`)."""

    name: str
    output: str
    status: str
    wall_seconds: float | None
    counts: dict[str, int]
    backgrounds: dict[str, int]
    turns_mean: float | None
    histograms: dict[str, Histogram]
    quarantine_reasons: dict[str, int]
