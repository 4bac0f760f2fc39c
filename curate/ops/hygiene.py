"""Caption hygiene: rules that clean MLLM output or reject it with a reason (pure functions).

Order matters: a refusal is recognised before openers are stripped ("I'm sorry, the image shows..."),
unfinished text is trimmed to its last full sentence before lengths are measured, and the script is
checked before words are counted (CJK text has no spaces between words).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from curate.backends.types import CaptionResult

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngram_fraction(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one: near 0 for prose, near 1 for a loop."""
    tokens = words(text)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


def max_sentence_repeats(text: str) -> int:
    sentences = [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 3]
    return max(Counter(sentences).values(), default=0)


def latin_letter_fraction(text: str) -> float:
    """Share of letters in the Latin script (a cheap language guard for English-prompted models);
    1.0 for text without letters, which the length rules judge instead."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    latin = sum(1 for ch in letters if "LATIN" in unicodedata.name(ch, ""))
    return latin / len(letters)


def trim_to_sentence(text: str) -> str:
    """Cut text that stopped mid-sentence (token limit) back to its last sentence end."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else ""


def strip_openers(text: str, patterns: list[str]) -> str:
    for pattern in patterns:
        stripped = re.sub(pattern, "", text, count=1, flags=re.IGNORECASE).lstrip(" ,:;-")
        if stripped != text:
            text = stripped[:1].upper() + stripped[1:]
    return text


def _drop(reason: str, detail: str) -> CaptionResult:
    return CaptionResult(None, reason=reason, dropped=f"caption dropped ({reason}): {detail}")


def clean_generation(text: str, tokens: int, finished: bool, rules) -> CaptionResult:
    """``clean_caption`` of a model's output, keeping how many tokens it generated."""
    result = clean_caption(text, finished, rules)
    return CaptionResult(result.text, result.reason, result.dropped, tokens=tokens)


def clean_caption(text: str, finished: bool, rules) -> CaptionResult:
    """Apply ``rules`` (a CaptionHygieneConfig) to one generated caption."""
    text = " ".join(text.split())
    for pattern in rules.refusal_patterns:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return _drop("refusal", f"matches {pattern!r}")
    if not finished and not rules.keep_unfinished:
        if not rules.trim_unfinished:
            return _drop("unfinished", "generation hit max_new_tokens")
        text = trim_to_sentence(text)
    text = strip_openers(text, rules.strip_openers)
    if rules.min_latin_letter_frac is not None:
        latin = latin_letter_fraction(text)
        if latin < rules.min_latin_letter_frac:
            return _drop("language", f"Latin-letter share {latin:.2f} < {rules.min_latin_letter_frac}")
    n_words = len(words(text))
    if n_words == 0:
        return _drop("empty", "no words left")
    if n_words < rules.min_words:
        return _drop("too_short", f"{n_words} words < {rules.min_words}")
    if n_words > rules.max_words:
        return _drop("too_long", f"{n_words} words > {rules.max_words}")
    frac = repeated_ngram_fraction(text, rules.ngram)
    if frac > rules.max_repeated_ngram_frac or max_sentence_repeats(text) > rules.max_sentence_repeats:
        return _drop("repetition", f"repeated {rules.ngram}-gram share {frac:.2f}")
    return CaptionResult(text)
