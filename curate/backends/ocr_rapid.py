"""OCR captions with RapidOCR (PP-OCR ONNX models shipped inside the ``rapidocr`` wheel)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
from PIL import Image

from curate.backends.types import CaptionResult, Quad
from curate.config import RapidOcrConfig
from curate.ops.images import fit_within


@dataclass(frozen=True)
class OcrLine:
    box: np.ndarray  # (4, 2) corner points
    text: str
    score: float

    @property
    def centre_y(self) -> float:
        return float(self.box[:, 1].mean())

    @property
    def height(self) -> float:
        return float(self.box[:, 1].max() - self.box[:, 1].min())

    @property
    def left(self) -> float:
        return float(self.box[:, 0].min())


def reading_order(lines: list[OcrLine]) -> str:
    """Join OCR lines top to bottom, left to right; lines whose centres are within half a line height
    of each other are one visual row."""
    if not lines:
        return ""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda item: (item.centre_y, item.left)):
        if rows:
            ref = rows[-1][0]
            if abs(line.centre_y - ref.centre_y) <= 0.5 * max(min(line.height, ref.height), 1.0):
                rows[-1].append(line)
                continue
        rows.append([line])
    return "\n".join(" ".join(item.text for item in sorted(row, key=lambda item: item.left)) for row in rows)


def line_image(image: Image.Image, quad: Quad, pad_x: float = 0.2, pad_y: float = 0.05) -> Image.Image:
    """A text line cut out along its corner points (tilted lines of a rotated scan come out level),
    padded by fractions of its height; what falls outside the image is white."""
    tl, tr, br, bl = (np.asarray(p, dtype=np.float64) for p in quad)
    along, across = (tr - tl + br - bl) / 2, (bl - tl + br - tr) / 2
    length, height = float(np.hypot(*along)), float(np.hypot(*across))
    u, v = along / max(length, 1e-9), across / max(height, 1e-9)
    dx, dy = u * pad_x * height, v * pad_y * height
    corners = [tl - dx - dy, bl - dx + dy, br + dx + dy, tr + dx - dy]  # PIL's QUAD order: UL, LL, LR, UR
    size = (max(1, round(length + 2 * pad_x * height)), max(1, round(height + 2 * pad_y * height)))
    return image.transform(size, Image.Transform.QUAD, data=[c for p in corners for c in p],
                           resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))


def cpus_granted() -> int | None:
    """The CPUs Ray granted this actor or task, rounded up; None outside one (a driver, a test)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # no Ray, or a Ray without the call: the library's default
        return None
    return max(1, math.ceil(cpus)) if cpus else None


def rapidocr_engine():
    """A RapidOCR engine whose ONNX Runtime threads fit the CPUs Ray granted: its default, a thread
    per core in every actor, put 16 OCR actors' 256 threads on the GPU machine's 16 cores (4.8 s a
    page against 1 s alone, and the GPU stages' host loops starved; benchmarks/RESULTS.md)."""
    from rapidocr import RapidOCR

    threads = cpus_granted()
    params = {} if threads is None else {"EngineConfig.onnxruntime.intra_op_num_threads": threads,
                                         "EngineConfig.onnxruntime.inter_op_num_threads": 1}
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    engine = RapidOCR(params=params)
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return engine


class RapidOcrCaptioner:
    name = "rapidocr"
    source = "ocr"
    batched = False  # one page at a time: the detector runs per crop anyway

    def __init__(self, cfg: RapidOcrConfig):
        self.cfg = cfg
        self.engine = rapidocr_engine()

    def describe(self) -> str:
        return f"rapidocr-{version('rapidocr')} (bundled PP-OCR det/cls/rec ONNX models)"

    def read_lines(self, crop: Image.Image) -> list[OcrLine]:
        result = self.engine(np.asarray(crop.convert("RGB")))
        if result.boxes is None or result.txts is None:
            return []
        return [
            OcrLine(np.asarray(box, dtype=np.float64), text.strip(), float(score))
            for box, text, score in zip(result.boxes, result.txts, result.scores)
            if score >= self.cfg.min_score and text.strip()
        ]

    def read_line(self, image: Image.Image, quad: Quad) -> str | None:
        """One known text line, recognised whole (no detection: the line is already found)."""
        result = self.engine(np.asarray(line_image(image, quad)), use_det=False, use_cls=False, use_rec=True)
        if not result.txts or result.scores[0] < self.cfg.min_score:
            return None
        return result.txts[0].strip() or None

    def caption(self, image: Image.Image, boxes: list[tuple[int, int, int, int]],
                lines: list[list[Quad]] | None = None) -> list[CaptionResult]:
        """The text of each box: its known lines read one by one, a line of caption each (so a caption
        holds whole lines), or, for a box without lines, detection and recognition in reading order."""
        image = image.convert("RGB")
        out = []
        for i, box in enumerate(boxes):
            if lines is not None and lines[i]:
                text = "\n".join(t for t in (self.read_line(image, quad) for quad in lines[i]) if t)
            else:
                crop, _ = fit_within(image.crop(box), self.cfg.max_side)
                text = reading_order(self.read_lines(crop))
            if text:
                out.append(CaptionResult(text))
            else:
                out.append(CaptionResult(None, "no_text", "OCR found no text in the region"))
        return out
