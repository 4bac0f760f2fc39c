"""What backends return, and what each kind of backend must offer (the stages call only these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

Box = tuple[int, int, int, int]
Quad = list[list[float]]  # four [x, y] corner points, clockwise from top-left


@dataclass
class MaskSet:
    """Masks of one image in full-resolution pixels: boxes (N, 4) xyxy, areas (N,) px, scores (N,)."""

    boxes: np.ndarray
    areas: np.ndarray
    scores: np.ndarray
    quads: np.ndarray | None = None  # (N, 4, 2) corner points, when the masks are detected text lines

    def __len__(self) -> int:
        return int(self.areas.shape[0])

    @classmethod
    def empty(cls) -> MaskSet:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class CaptionResult:
    """A region's caption, or why it has none (``reason`` a short label, ``dropped`` for people)."""

    text: str | None
    reason: str | None = None
    dropped: str | None = None
    tokens: int = 0  # tokens the model generated for it (0 for OCR)


@dataclass(frozen=True)
class Generation:
    """One raw model generation, before hygiene."""

    text: str
    tokens: int  # generated tokens up to and including the end-of-sequence token
    finished: bool  # False when generation stopped at max_new_tokens


class MaskGenerator(Protocol):
    """Masks of whole images (boxes, areas, scores in full-resolution pixels)."""

    def describe(self) -> str: ...

    def generate(self, images: list[Image.Image]) -> list[MaskSet]: ...


class Captioner(Protocol):
    """Captions of boxes, image by image. ``batched`` says whether it is also a BatchCaptioner."""

    source: str  # "mllm" | "ocr": recorded as each region's caption_source
    batched: bool

    def describe(self) -> str: ...

    def caption(self, image: Image.Image, boxes: list[Box],
                lines: list[list[Quad]] | None = None) -> list[CaptionResult]:
        """One result per box. ``lines``: for each box, the text lines it holds (corner points), when
        the regions came from a text-line detector; a captioner that reads text reads those lines."""
        ...


class BatchCaptioner(Captioner, Protocol):
    """A captioner that takes crops of many images in one call (one model batch)."""

    def caption_batch(self, requests: list[tuple[Image.Image, Box]]) -> list[CaptionResult]: ...


class QuestionWriter(Protocol):
    """Raw question generations for captions (rules are applied by the stage)."""

    def describe(self) -> str: ...

    def ask(self, captions: list[str], **extra) -> list[Generation]: ...
