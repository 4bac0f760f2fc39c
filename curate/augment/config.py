"""Configuration of ``curate augment canvas`` (pipelines/canvas.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from curate.config import OutputConfig, PathText, RayConfig, Strict, data_hash, load_yaml_model


class VqaSourceConfig(Strict):
    """Low-res VQA data: LLaVA-style JSON (conversations + image folder) or a parquet table."""

    format: Literal["llava", "table"]
    path: PathText = Field(..., description="llava: the JSON file; table: a .parquet file (HF datasets' parquet too)")
    images: PathText | None = Field(None, description="llava: folder the entries' 'image' paths are relative to")
    dataset: str | None = Field(None, description="name recorded in each record; defaults to the path's stem")
    image_column: str = Field("image", description="table: bytes, a path, or an HF Image struct {bytes, path}")
    question_column: str = "question"
    answer_column: str = "answer"
    id_column: str | None = Field(None, description="table: column with a sample id (default: row number)")


class CanvasConfig(Strict):
    """How each canvas is drawn (every choice comes from a generator seeded per input: deterministic)."""

    long_side: tuple[int, int] = Field((1024, 4096), description="canvas long side, uniform in [lo, hi] px")
    aspect_ratio: tuple[float, float] = Field((0.5, 2.0), description="canvas width/height, log-uniform")
    scale: tuple[float, float] = Field(
        (1.0, 1.0), description="pasted image scale, uniform; 1.0 pastes the source pixels unchanged")
    backgrounds: dict[Literal["solid", "noise", "image"], float] = Field(
        {"solid": 1.0, "noise": 1.0}, description="background kinds and their sampling weights")
    background_images: PathText | None = Field(None, description="folder of background photos for 'image'")
    seed: int = 0
    image_format: Literal["png", "jpg"] = Field(
        "png", description="png keeps the pasted pixels byte-identical to the decoded source")

    @model_validator(mode="after")
    def _check(self) -> CanvasConfig:
        if self.long_side[0] > self.long_side[1] or self.long_side[0] < 64:
            raise ValueError("long_side: need 64 <= lo <= hi")
        if not 0 < self.aspect_ratio[0] <= self.aspect_ratio[1]:
            raise ValueError("aspect_ratio: need 0 < lo <= hi")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError("scale: need 0 < lo <= hi")
        if not self.backgrounds or min(self.backgrounds.values()) < 0 or sum(self.backgrounds.values()) <= 0:
            raise ValueError("backgrounds: give at least one kind with a positive weight")
        if self.backgrounds.get("image", 0) > 0 and not self.background_images:
            raise ValueError("backgrounds.image needs background_images (a folder of photos)")
        return self


class CanvasPipelineConfig(Strict):
    name: str
    description: str = ""
    source: VqaSourceConfig
    canvas: CanvasConfig = Field(default_factory=CanvasConfig)
    max_source_side: int = Field(4096, ge=16, description="sources larger than this are quarantined")
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(path="out/canvas", shard_max_samples=500))
    ray: RayConfig = Field(default_factory=RayConfig)

    def sha256(self) -> str:
        return data_hash(self)


def load_canvas_config(path: str | Path, overrides: list[str] | None = None) -> CanvasPipelineConfig:
    return load_yaml_model(CanvasPipelineConfig, "canvas config", path, overrides)
