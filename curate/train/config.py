"""Training configuration (`curate train CONFIG.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from curate.config import PathText, Strict, load_yaml_model


def one_or_many(value):
    """A lone string as a list of one: ``--set data.shards=out/shards/*.tar`` means one glob."""
    return [value] if isinstance(value, str) else value


# shard paths, globs or URLs: a list, or one of them alone
Shards = Annotated[list[PathText], BeforeValidator(one_or_many)]


class TrainDataConfig(Strict):
    shards: Shards = Field(..., min_length=1, description="tar paths, globs or URLs: region, question or "
                                                              "canvas shards (mixed freely); with ps3_text_box: "
                                                              "the image tars of PS3's two-set format")
    ps3_text_box: Shards = Field(default_factory=list, description="PS3's two-set format (NVlabs/PS3, "
                                    "`curate export ps3`): the text-box tars, read in lock-step with `shards`")
    shuffle_buffer: int = Field(0, ge=0, description="samples in the shuffle buffer (0: keep shard order)")
    shard_shuffle: bool = Field(False, description="shuffle shard order each epoch")
    resampled: bool = Field(False, description="sample shards with replacement forever (large-scale training)")
    num_workers: int = Field(0, ge=0)
    max_regions: int = Field(1, ge=1, description="captioned regions per image per step, drawn anew each "
                                                  "epoch (PS3 samples one box per image)")
    global_caption_prob: float = Field(0.25, ge=0, le=1, description="chance that an image with a global "
                                       "caption takes it this step instead of its regions (PS3: 0.25); the "
                                       "pair then contrasts the low-res feature with the global caption")


class UHDConfig(Strict):
    max_slices: int = Field(6, ge=1, description="largest LLaVA-UHD slice grid (the seed uses 6)")
    compress: Literal["resampler", "space_to_depth"] = Field(
        "resampler", description="per-view compression: learned-query resampler (LLaVA-UHD) or VisualRWKV-HD's "
                                 "lossless 2x2 space-to-depth + linear")
    queries: int = Field(16, ge=1, description="resampler queries per view (LLaVA-UHD: 64)")


class TrainModelConfig(Strict):
    vision: str = Field("tiny", description="'tiny', 'so400m' (random init, SigLIP-so400m shapes), or a SigLIP "
                                            "checkpoint (HF id or local path)")
    low_res: int = Field(64, ge=16, description="square low-res view side (so400m: 378 or 384)")
    hi_res: int = Field(256, ge=16, description="long side of the high-res view at scale 1, aspect kept "
                                                "(PS3: 1512 or 3780)")
    hi_scales: list[float] = Field([0.5, 1.0], description="high-res scales, fractions of hi_res")
    select_k: int = Field(16, ge=1, description="high-res patches encoded per region and scale")
    select_gt_prob: float = Field(1.0, ge=0, le=1, description="training: chance that a region's box patches "
                                  "are chosen first and predicted scores fill the rest (PS3's select_w_gt); "
                                  "otherwise, and always at evaluation, predicted scores alone choose")
    pool_gt_only: bool = Field(True, description="pool only the chosen tokens inside the box (PS3 Table 6: +3.7)")
    select_dim: int = Field(64, ge=8, description="width of the selection head's features")
    hires_selection_side: int = Field(0, ge=0, description="side of the light-weight high-res selection "
                                      "encoder's input (PS3: 1512 = 4x low-res); 0: off")
    scale_pos_embed: bool = Field(True, description="a learned position-embedding residual per high-res scale "
                                                    "(PS3 Table 6: +0.8)")
    low_res_context: Literal["kv_cache", "tokens", "none"] = Field(
        "kv_cache", description="what high-res tokens see of the low-res pass: its keys and values at every "
                                "layer (PS3, Table 6: +8.8), its input tokens re-encoded beside them, or nothing")
    scheme: Literal["ps3", "uhd"] = Field("ps3", description="high-res input: PS3's selected patches, or "
                                                              "LLaVA-UHD's slices + overview (model.uhd)")
    uhd: UHDConfig = Field(default_factory=UHDConfig)
    embed_dim: int = Field(64, ge=8, description="shared image-text embedding size")
    text: str = Field("minilm", description="'minilm' (the bundled all-MiniLM-L6-v2, frozen), a sentence-"
                                            "embedding checkpoint directory (benchmarks save random MiniLM-shaped "
                                            "ones with curate.testing.random_models.save_random_minilm)")

    @field_validator("low_res_context", mode="before")
    @classmethod
    def _bool_context(cls, value):
        """Configs written before the KV cache said true (tokens beside) or false."""
        return {True: "tokens", False: "none"}.get(value, value) if isinstance(value, bool) else value


class TrainOptimConfig(Strict):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1, description="images per micro-batch (per GPU)")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0)
    min_lr_frac: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    precision: Literal["bf16", "fp32"] = Field("bf16", description="bf16 autocast on GPU (CPU runs fp32)")
    grad_clip: float = Field(1.0, gt=0)


class TrainLossConfig(Strict):
    selection_weight: float = Field(1.0, ge=0, description="weight of each selection loss (PS3: 1 for prior "
                                                          "and posterior box supervision)")
    intra_image_negatives: bool = Field(False, description="with max_regions > 1, count other regions of the "
                                        "same image as negatives (PS3 Table 6: removing them +5.3)")
    recall_select_frac: float = Field(0.25, gt=0, le=1, description="share of patches 'selected' for recall")


class TrainEvalConfig(Strict):
    shards: Shards = Field(default_factory=list, description="held-out shards for `curate evaluate` and "
                                                               "`curate train --eval` (same forms as data.shards)")
    max_images: int = Field(256, ge=1, description="images evaluated")
    pictures: int = Field(8, ge=0, description="images drawn with their predicted score maps and boxes")
    select_frac: float = Field(0.44, gt=0, le=1, description="share of low-res patches selected for recall "
                                                             "(PS3 Table 7 selects 44%)")


class TrainConfig(Strict):
    name: str = "ps3-local"
    seed: int = 0
    data: TrainDataConfig
    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    optim: TrainOptimConfig = Field(default_factory=TrainOptimConfig)
    loss: TrainLossConfig = Field(default_factory=TrainLossConfig)
    eval: TrainEvalConfig = Field(default_factory=TrainEvalConfig)
    out: PathText = Field("out/train", description="checkpoints and logs")
    save_every: int = Field(200, ge=1)
    log_every: int = Field(10, ge=1)
    resume: bool = Field(True, description="continue from out/last.pt when it exists")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.model.hi_res < self.model.low_res:
            raise ValueError("model.hi_res must be at least model.low_res")
        return self


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    return load_yaml_model(TrainConfig, "train config", path, overrides)
