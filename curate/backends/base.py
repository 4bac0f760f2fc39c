"""Types shared by backends of one stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionResult:
    """A region's caption, or why it has none (``reason`` a short label, ``dropped`` for people)."""

    text: str | None
    reason: str | None = None
    dropped: str | None = None
    tokens: int = 0  # tokens the model generated for it (0 for OCR)
