import pytest

from curate.config import CaptionHygieneConfig
from curate.ops.hygiene import (
    clean_caption,
    latin_letter_fraction,
    repeated_ngram_fraction,
    trim_to_sentence,
)

RULES = CaptionHygieneConfig()


def test_boilerplate_opener_is_stripped_and_capitalised():
    out = clean_caption("The image shows a red bus parked beside a brick wall.", True, RULES)
    assert out.text == "A red bus parked beside a brick wall."
    out = clean_caption("In this image, two dogs run across wet sand.", True, RULES)
    assert out.text == "Two dogs run across wet sand."


def test_text_without_opener_is_kept_verbatim_modulo_whitespace():
    out = clean_caption("A street sign   reading\nMAIN ST above a lamp post.", True, RULES)
    assert out.text == "A street sign reading MAIN ST above a lamp post."


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with identifying people in this image.",
    "As an AI, I cannot see the details of this region.",
    "It is not possible to tell what the small object is.",
])
def test_refusals_are_dropped(text):
    out = clean_caption(text, True, RULES)
    assert out.text is None and out.reason == "refusal" and "refusal" in out.dropped


def test_repetition_loop_is_dropped():
    loop = "A cat sits on a mat. " * 6
    out = clean_caption(loop, True, RULES)
    assert out.text is None and out.reason == "repetition"
    assert repeated_ngram_fraction(loop) > 0.5
    assert repeated_ngram_fraction("A cat sits on a mat next to a small brown dog.") == 0.0


def test_unfinished_text_is_trimmed_to_last_sentence():
    out = clean_caption("A red car is parked outside. Next to it stands a tall man wearing a", False, RULES)
    assert out.text == "A red car is parked outside."
    assert trim_to_sentence("no sentence end here") == ""
    strict = CaptionHygieneConfig(trim_unfinished=False)
    assert clean_caption("A red car. A man in a", False, strict).reason == "unfinished"
    keep = CaptionHygieneConfig(keep_unfinished=True, trim_unfinished=False)
    assert clean_caption("A red car. A man in a", False, keep).text == "A red car. A man in a"


def test_length_bounds():
    assert clean_caption("Red car.", True, RULES).reason == "too_short"
    long = " ".join(f"word{i}" for i in range(500)) + "."
    assert clean_caption(long, True, RULES).reason == "too_long"


def test_language_guard_uses_latin_letter_share():
    out = clean_caption("一辆红色的公共汽车停在砖墙旁边，招牌上写着营业。", True, RULES)
    assert out.text is None and out.reason == "language"
    assert latin_letter_fraction("Café au lait") == 1.0
    off = CaptionHygieneConfig(min_latin_letter_frac=None, min_words=0)
    assert clean_caption("一辆红色的公共汽车停在砖墙旁边。", True, off).text is not None
