"""Rules for questions retargeted from local captions (pure functions).

A question is kept only when it is one question (ends with '?'), has no box coordinates or leaks of
the prompt's wording, is within length bounds, is not a copy of the caption, does not give the answer
away (the caption's numbers, quoted or capitalised text, names), is not a generic question any image
answers, shares content words with its caption, and is written in the caption's script.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from curate.ops.hygiene import words

_PREFIX = re.compile(r"^\s*(question\s*:|q\s*:)\s*", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_QUOTED = re.compile(r'["\u201c]([^"\u201d]{2,}?)["\u201d]')
_CAPS_RUN = re.compile(r"\b[A-Z][A-Z0-9&'-]*[A-Z0-9](?:\s+[A-Z0-9][A-Z0-9&'-]*)*\b")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b")
STOPWORDS = frozenset("""a an the of in on at to for from by with and or but is are was were be been being it its
this that these those there here what which who whom whose when where why how does do did can could would should
will shall may might must has have had not no yes you your i me my we our they their them he she his her as into
onto over under above below near next about any some all each many much more most other than then so if also just
very one image picture photo region area shown visible seen see""".split())
_SCRIPT_ALIASES = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "CJK": "CJK"}


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


def content_words(text: str) -> set[str]:
    """Lower-cased words that carry content (not function words), a plural 's' dropped."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w
            for w in (w.lower() for w in words(text)) if len(w) >= 3 and w not in STOPWORDS}


def answer_leak(question: str, caption: str) -> str | None:
    """The caption's distinctive content that the question repeats, if any: a number, quoted text, a
    run of capitals (sign text, of two or more words anywhere, or one word in capitals), or a name
    (a capitalised word inside a sentence)."""
    q_lower = question.lower()
    for number in _NUMBER.findall(caption):
        if re.search(rf"(?<![\d.,:/-]){re.escape(number)}(?![\d])", question):
            return number
    for quoted in _QUOTED.findall(caption):
        if quoted.strip().lower() in q_lower:
            return quoted.strip()
    for run in _CAPS_RUN.findall(caption):
        if len(run) < 2 or run == "I":
            continue
        if (" " in run and run.lower() in q_lower) or re.search(rf"\b{re.escape(run)}\b", question):
            return run
    for name in _NAME.findall(caption):
        if name.lower() not in STOPWORDS and re.search(rf"(?<!^)\b{re.escape(name)}\b", question):
            return name
    return None


def script_of(text: str) -> str | None:
    """The script most of the text's letters are in (LATIN, CJK, CYRILLIC, ...); None without letters."""
    scripts = Counter()
    for ch in text:
        if ch.isalpha():
            first = unicodedata.name(ch, "UNKNOWN").split()[0]
            scripts[_SCRIPT_ALIASES.get(first, first)] += 1
    return scripts.most_common(1)[0][0] if scripts else None


def validate_question(text: str, caption: str, rules) -> QuestionResult:
    """Apply ``rules`` (a QuestionRulesConfig) to one generated question."""
    question = first_line(text)
    if not question.endswith("?"):
        return QuestionResult(None, "not_a_question", "does not end with '?'")
    if question.count("?") > 1:
        return QuestionResult(None, "several_questions", f"{question.count('?')} question marks")
    if rules.same_script:
        asked, described = script_of(question), script_of(caption)
        if asked and described and asked != described:
            return QuestionResult(None, "other_script", f"question in {asked}, caption in {described}")
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
    if rules.reject_answer_leaks and (leak := answer_leak(question, caption)):
        return QuestionResult(None, "answer_leak", f"repeats the caption's {leak!r}")
    for pattern in rules.generic_patterns:
        if re.search(pattern, question, flags=re.IGNORECASE):
            return QuestionResult(None, "generic", f"matches {pattern!r}")
    shared = content_words(question) & content_words(caption)
    if len(shared) < rules.min_specific_words:
        return QuestionResult(None, "not_specific", f"{len(shared)} content words shared with the caption "
                                                    f"< {rules.min_specific_words}")
    return QuestionResult(question)
