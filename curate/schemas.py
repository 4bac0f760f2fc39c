"""JSON Schemas generated from the pydantic models (``curate schema`` writes them to schemas/)."""

from __future__ import annotations

import json

from curate.augment.config import CanvasPipelineConfig
from curate.config import PipelineConfig
from curate.records import SCHEMA_MODELS
from curate.stats.models import CanvasStats, CorpusStats
from curate.train.config import TrainConfig


def render_schemas() -> dict[str, str]:
    """File name -> schema text, stable (sorted keys, trailing newline) so a diff means a change."""
    models = {**SCHEMA_MODELS, "pipeline_config": PipelineConfig, "canvas_config": CanvasPipelineConfig,
              "train_config": TrainConfig,
              "corpus_stats": CorpusStats, "canvas_stats": CanvasStats}
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in sorted(models.items())
    }
