"""Rules for questions retargeted from local captions (pure functions).

A question is kept only when it is one question (ends with '?'), has no box coordinates or leaks of
the prompt's wording, is within length bounds, and is not a copy of the caption.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curate.ops.hygiene import words

_PREFIX = re.compile(r"^\s*(question\s*:|q\s*:)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class QuestionResult:
    question: str | None
    reason: str | None = None
    detail: str | None = None


def first_line(text: str) -> str:
    """The model's first non-empty line without a 'Question:' prefix or wrapping quotes."""
    for line in text.strip().splitlines():
        line = _PREFIX.sub("", line).strip().strip('"\u201c\u201d').strip()
        if line:
            return line
    return ""


def in_order_overlap(question: str, caption: str) -> float:
    """Share of the question's words that appear in the caption in the same order (LCS / len)."""
    q, c = words(question), words(caption)
    if not q:
        return 0.0
    prev = [0] * (len(c) + 1)
    for qw in q:
        cur = [0] * (len(c) + 1)
        for j, cw in enumerate(c, start=1):
            cur[j] = prev[j - 1] + 1 if qw == cw else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1] / len(q)


def validate_question(text: str, caption: str, rules) -> QuestionResult:
    """Apply ``rules`` (a QuestionRulesConfig) to one generated question."""
    question = first_line(text)
    if not question.endswith("?"):
        return QuestionResult(None, "not_a_question", "does not end with '?'")
    if question.count("?") > 1:
        return QuestionResult(None, "several_questions", f"{question.count('?')} question marks")
    n = len(words(question))
    if n < rules.min_words:
        return QuestionResult(None, "too_short", f"{n} words < {rules.min_words}")
    if n > rules.max_words:
        return QuestionResult(None, "too_long", f"{n} words > {rules.max_words}")
    for pattern in rules.forbidden_patterns:
        if re.search(pattern, question, flags=re.IGNORECASE):
            return QuestionResult(None, "leak", f"matches {pattern!r}")
    overlap = in_order_overlap(question, caption)
    if overlap > rules.max_caption_overlap:
        return QuestionResult(None, "copies_caption", f"{overlap:.2f} of its words follow the caption")
    return QuestionResult(question)
