import pytest

from curate.config import QuestionRulesConfig
from curate.ops.questions import first_line, in_order_overlap, validate_question

RULES = QuestionRulesConfig()
CAPTION = "A red sign above the shop door reads OPEN 24 HOURS in white capital letters."


def test_a_good_question_is_kept_without_its_prefix():
    out = validate_question('Question: "What are the opening hours written on the sign above the door?"',
                            CAPTION, RULES)
    assert out.question == "What are the opening hours written on the sign above the door?"


@pytest.mark.parametrize("text, reason", [
    ("The sign says OPEN 24 HOURS.", "not_a_question"),
    ("What does the sign say? What colour is it?", "several_questions"),
    ("Sign text?", "too_short"),
    ("What is written inside the box at 120, 340, 560 on the image?", "leak"),
    ("According to the caption, what does the sign say?", "leak"),
    ("What are the bounding box contents of the sign?", "leak"),
    ("A red sign above the shop door reads OPEN 24 HOURS in white capital letters?", "copies_caption"),
    ("What " + "very " * 50 + "small text is there?", "too_long"),
])
def test_bad_questions_are_dropped_with_their_reason(text, reason):
    out = validate_question(text, CAPTION, RULES)
    assert out.question is None and out.reason == reason


def test_first_line_skips_blank_lines_and_quotes():
    assert first_line('\n\n  "Which way does the arrow point?"\nExtra') == "Which way does the arrow point?"


def test_in_order_overlap():
    assert in_order_overlap("a b c d", "a x b y c z d") == 1.0
    assert in_order_overlap("d c b a", "a b c d") == 0.25
    assert in_order_overlap("", "a") == 0.0
