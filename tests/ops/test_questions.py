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


@pytest.mark.parametrize("text, caption, reason", [
    ("What is the shop's sign, which reads OPEN 24 HOURS?", CAPTION, "answer_leak"),
    ("What does the sign say about being open 24 hours a day?", CAPTION, "answer_leak"),  # the number
    ("What price is written on the tag, 4.99 dollars?", "A paper price tag on the shelf shows 4.99 in red.",
     "answer_leak"),
    ('Does the banner say "Summer Sale" above the entrance?',
     'A green banner above the entrance reads "Summer Sale" in bold letters.', "answer_leak"),
    ("Which brand is on the Nike logo printed on the shoe?", "A white running shoe with a black Nike logo.",
     "answer_leak"),
    ("Is there a bus?", "A yellow school bus parked beside a brick building.", "generic"),
    ("What can you see in this image?", "A yellow school bus parked beside a brick building.", "generic"),
    ("What colour is the umbrella held by the woman?", "A yellow school bus parked beside a brick building.",
     "not_specific"),
    ("这个标志上写的是什么营业时间?", CAPTION, "other_script"),
    ("Какие часы работы указаны на вывеске?", CAPTION, "other_script"),
])
def test_leaks_generic_unrelated_and_foreign_questions_are_dropped(text, caption, reason):
    out = validate_question(text, caption, RULES)
    assert (out.question, out.reason) == (None, reason), out


@pytest.mark.parametrize("text, caption", [
    ("What are the opening hours written on the sign above the door?", CAPTION),
    ("What is parked beside the brick building?", "A yellow school bus parked beside a brick building."),
    ("What logo is printed on the side of the running shoe?", "A white running shoe with a black Nike logo."),
    ("What does the green banner above the entrance announce?",
     'A green banner above the entrance reads "Summer Sale" in bold letters.'),
])
def test_specific_questions_that_keep_the_answer_hidden_are_kept(text, caption):
    assert validate_question(text, caption, RULES).question == text


def test_each_new_rule_can_be_switched_off():
    caption = "A yellow school bus parked beside a brick building with the number 42."
    loose = QuestionRulesConfig(reject_answer_leaks=False, generic_patterns=[], min_specific_words=0,
                                same_script=False, min_words=1)
    for text in ("Is there a bus?", "What is the number 42 on the bus?", "What colour is the umbrella there?",
                 "这个标志上写的是什么营业时间?"):
        assert validate_question(text, caption, loose).question == text
