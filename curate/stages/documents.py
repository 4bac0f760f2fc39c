"""Documents stage: a page's text-line regions and their OCR text, on CPU actors.

Used when natural images' masks hold a GPU (``documents_apart``): the OCR detector and recogniser
are CPU work, about a second a page, that the GPU actors otherwise ran while the GPU waited. The GPU
stages then see photos only; pages pass them untouched.
"""

from __future__ import annotations

from curate.config import OcrLayoutMasksConfig, PipelineConfig
from curate.stages.caption import DocumentCaptionStage
from curate.stages.regions import DocumentRegionsStage

MIN_CPUS = 4  # on fewer, the CPUs that would run the stage are the GPU actors' own
# Rows per call. A page is seconds of OCR, and batching pages saves nothing; photos pass the stage
# untouched but wait for any page in their batch (an H200 run went from 1.24 to 2.2 images/s with
# batches of one; benchmarks/RESULTS.md).
PAGES_PER_CALL = 1


def documents_apart(cfg: PipelineConfig, mask_gpus: float, cpus: int) -> bool:
    """Whether documents get their regions and captions in this stage: when natural images' masks
    hold a GPU, documents use the OCR detector (CPU only; inside the GPU actor it held the GPU idle,
    benchmarks/RESULTS.md) and the cluster has ``MIN_CPUS``. Documents' captioner is OCR or none,
    never a GPU model (config)."""
    return mask_gpus > 0 and isinstance(cfg.masks.document, OcrLayoutMasksConfig) and cpus >= MIN_CPUS


class DocumentStage:
    name = "documents"
    kinds = ("document",)  # its time is the pages'

    def __init__(self, cfg: PipelineConfig):
        self.regions = DocumentRegionsStage(cfg)
        self.captions = DocumentCaptionStage(cfg)

    def process(self, rows: list[dict]) -> list[dict]:
        return self.captions.process(self.regions.process(rows))
