"""Document regions from OCR text detection (RapidOCR's PP-OCR detector, no recognition).

Each detected text line becomes a small "mask": its axis-aligned box, and its corner points (a line
of a rotated scan is a tilted quad), which the OCR captioner reads the line through. The regions
stage makes regions of whole lines from them (curate.ops.text_lines), or (``regions: windows``) the
density selection finds windows dense in text lines.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from curate.backends.types import MaskSet
from curate.config import OcrLayoutMasksConfig
from curate.ops.images import fit_within


class OcrLayoutRegions:
    def __init__(self, cfg: OcrLayoutMasksConfig | None = None, max_side: int | None = None):
        max_side = max_side or (cfg.max_side if cfg is not None else 2048)
        from curate.backends.ocr_rapid import rapidocr_engine

        self.engine = rapidocr_engine()
        self.max_side = max_side

    def describe(self) -> str:
        return f"rapidocr text-line detection (PP-OCR det, page at <= {self.max_side} px)"

    def line_quads(self, image: Image.Image) -> np.ndarray:
        """(N, 4, 2) corner points of text lines in full-resolution pixels, clipped to the image."""
        small, scale = fit_within(image.convert("RGB"), self.max_side)
        result = self.engine(np.asarray(small), use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(result, "boxes", None)
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4, 2))
        quads = np.asarray(boxes, dtype=np.float64) / scale
        quads[..., 0] = quads[..., 0].clip(0, image.width)
        quads[..., 1] = quads[..., 1].clip(0, image.height)
        return quads

    def line_boxes(self, image: Image.Image) -> np.ndarray:
        """(N, 4) xyxy boxes of text lines in full-resolution pixels."""
        quads = self.line_quads(image)
        return np.concatenate([quads.min(axis=1), quads.max(axis=1)], axis=1)

    def generate(self, images: list[Image.Image]) -> list[MaskSet]:
        out = []
        for image in images:
            quads = self.line_quads(image)
            boxes = np.concatenate([quads.min(axis=1), quads.max(axis=1)], axis=1)
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            out.append(MaskSet(boxes=boxes, areas=areas, scores=np.ones(len(boxes)), quads=quads))
        return out
