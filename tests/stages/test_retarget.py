import json

from curate.config import RetargetConfig, VlmConfig
from curate.stages.retarget import chain_question_request, merge_questions, question_requests, record_questions

CFG = RetargetConfig(backend="vllm", model="m")


def regions():
    return [
        {"box": [0, 0, 10, 10], "caption": "A green bicycle leaning on a yellow fence beside a mailbox."},
        {"box": [5, 5, 20, 20]},  # uncaptioned: nothing is asked
        {"box": [1, 1, 9, 9], "caption": "A poster announcing a jazz concert on Friday at eight."},
    ]


def test_record_questions_keeps_valid_and_explains_dropped():
    regs = regions()
    answers = [("What colour is the bicycle leaning on the fence?", 11, True), None,
               ("The poster is about jazz.", 7, True)]
    counts = record_questions(regs, answers, CFG, "hf:m")
    assert regs[0]["question"] == "What colour is the bicycle leaning on the fence?"
    assert regs[0]["question_model"] == "hf:m"
    assert "question" not in regs[1] and "question_skipped" not in regs[1]
    assert regs[2]["question_skipped"].startswith("question dropped (not_a_question)")
    assert counts == {"prompts": 2, "generated_tokens": 18, "questions": 1, "dropped.not_a_question": 1}


def test_unfinished_question_is_dropped():
    regs = regions()[:1]
    record_questions(regs, [("What colour is the bicycle leaning on the old fence?", 64, False)], CFG, "m")
    assert "unfinished" in regs[0]["question_skipped"]


def image_row(regs, status="ok"):
    return {"uri": "u", "status": status, "regions": json.dumps(regs), "models": "{}", "events": "{}"}


def test_question_requests_one_per_region_with_carriers_for_uncaptioned():
    reqs = question_requests(image_row(regions()), CFG)
    assert [r["request_index"] for r in reqs] == [0, 1, 2]
    assert all(r["request_total"] == 3 for r in reqs)
    assert json.loads(reqs[1]["request_sampling"])["max_tokens"] == 1
    assert "bicycle" in reqs[0]["request_messages"]
    assert reqs[0]["payload"] is not None and reqs[1]["payload"] is None


def test_rows_without_captions_become_a_single_carrier():
    (req,) = question_requests(image_row([{"box": [0, 0, 5, 5]}]), CFG)
    assert req["request_total"] == 0 and req["payload"] is not None


def test_merge_questions_ignores_carrier_answers():
    row = merge_questions(image_row(regions()), [("What colour is the bicycle on the fence?", 9, True),
                                                 ("x", 1, False), ("Which day is the concert on?", 7, True)], CFG)
    regs = json.loads(row["regions"])
    assert regs[0]["question"] and regs[2]["question"] and "question_skipped" not in regs[1]
    assert json.loads(row["events"])["retarget.questions"] == 2


def test_chain_turns_a_caption_answer_into_a_question_request():
    cap = VlmConfig(backend="vllm", model="q")
    from curate.backends.llm_vllm import request_row

    req = request_row("u", 0, 1, [], {"max_tokens": 256}, None)
    req["answers"] = json.dumps([["The image shows a tall clock tower with Roman numerals.", 12, True]])
    out = chain_question_request(req, cap, CFG)
    assert "A tall clock tower with Roman numerals." in out["request_messages"]
    req["answers"] = json.dumps([["I'm sorry, I cannot see this.", 8, True]])
    assert json.loads(chain_question_request(req, cap, CFG)["request_sampling"])["max_tokens"] == 1
