"""Documents stage: a page's text-line regions and their OCR text, on CPU actors.

Used when natural images' masks hold a GPU (``regions.documents_apart``): the OCR detector and
recogniser are CPU work, about a second a page, that the GPU actors otherwise ran while the GPU
waited. The GPU stages then see photos only; pages pass them untouched.
"""

from __future__ import annotations

from curate.config import PipelineConfig
from curate.stages.caption import DocumentCaptionStage
from curate.stages.regions import DocumentRegionsStage


class DocumentStage:
    name = "documents"
    kinds = ("document",)  # its time is the pages'

    def __init__(self, cfg: PipelineConfig):
        self.regions = DocumentRegionsStage(cfg)
        self.captions = DocumentCaptionStage(cfg)

    def process(self, rows: list[dict]) -> list[dict]:
        return self.captions.process(self.regions.process(rows))
