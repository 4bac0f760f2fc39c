"""Training configuration (`curate train CONFIG.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from curate.config import Strict, load_yaml_model


class TrainDataConfig(Strict):
    shards: list[str] = Field(..., min_length=1, description="tar paths, globs or URLs: region, question or "
                                                              "canvas shards (mixed freely); with ps3_text_box: "
                                                              "the image tars of PS3's two-set format")
    ps3_text_box: list[str] = Field(default_factory=list, description="PS3's two-set format (NVlabs/PS3, "
                                    "`curate export ps3`): the text-box tars, read in lock-step with `shards`")
    shuffle_buffer: int = Field(0, ge=0, description="samples in the shuffle buffer (0: keep shard order)")
    shard_shuffle: bool = Field(False, description="shuffle shard order each epoch")
    resampled: bool = Field(False, description="sample shards with replacement forever (large-scale training)")
    num_workers: int = Field(0, ge=0)
    max_regions: int = Field(4, ge=1, description="captioned regions used per image")


class TrainModelConfig(Strict):
    vision: str = Field("tiny", description="'tiny', 'so400m' (random init, SigLIP-so400m shapes), or a SigLIP "
                                            "checkpoint (HF id or local path)")
    low_res: int = Field(64, ge=16, description="global low-res view side (so400m: 384)")
    hi_res: int = Field(256, ge=16, description="high-res view side (PS3: up to 4K)")
    hi_scales: list[float] = Field([0.5, 1.0], description="multi-scale high-res grids, fractions of hi_res")
    select_k: int = Field(16, ge=1, description="high-res patches encoded per region and scale")
    embed_dim: int = Field(64, ge=8, description="shared image-text embedding size")
    text: str = Field("minilm", description="'minilm' (the bundled all-MiniLM-L6-v2, frozen), a sentence-"
                                            "embedding checkpoint directory (benchmarks save random MiniLM-shaped "
                                            "ones with curate.testing.random_models.save_random_minilm)")
    low_res_context: bool = Field(True, description="high-res tokens attend to the image's low-res tokens "
                                                    "(PS3's KV cache from stage 1)")


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
    global_weight: float = Field(0.5, ge=0, description="weight of low-res global contrast (needs global captions)")
    selection_weight: float = Field(1.0, ge=0)
    recall_select_frac: float = Field(0.25, gt=0, le=1, description="share of patches 'selected' for recall")


class TrainConfig(Strict):
    name: str = "ps3-local"
    seed: int = 0
    data: TrainDataConfig
    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    optim: TrainOptimConfig = Field(default_factory=TrainOptimConfig)
    loss: TrainLossConfig = Field(default_factory=TrainLossConfig)
    out: str = Field("out/train", description="checkpoints and logs")
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
