"""The hf question writer's real code path on a tiny random Llama (its text is noise: plumbing only)."""

import pytest

from curate.backends.llm_hf import HfQuestionWriter
from curate.config import RetargetConfig
from curate.ops.prompts import question_messages
from tests.conftest import record_warm_up


@pytest.fixture(scope="module")
def writer(tiny_llama_dir):
    cfg = RetargetConfig(backend="hf", model=str(tiny_llama_dir), dtype="fp32", max_new_tokens=5, batch_size=2)
    return HfQuestionWriter(cfg)


def test_messages_carry_system_prompt_and_caption(writer):
    msgs = question_messages("A blue door with a brass knocker.", writer.cfg)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "A blue door with a brass knocker." in msgs[1]["content"]
    text = writer.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|begin_of_text|>") and text.count("<|begin_of_text|>") == 1


def test_batched_questions_equal_one_by_one(writer):
    captions = ["A blue door.", "Two cups of coffee on a small wooden table near a window.", "Text: EXIT"]
    together = writer.ask(captions)
    alone = [writer.ask([c])[0] for c in captions]
    assert [g.text for g in together] == [g.text for g in alone]
    assert all(1 <= g.tokens <= 5 for g in together)


def test_a_static_cache_gives_the_same_greedy_questions(writer, tiny_llama_dir):
    """kv_cache: static (preallocated, compilable decoding) changes speed, not the text; compiled
    on the GPU only in production, here run uncompiled."""
    static = HfQuestionWriter(RetargetConfig(backend="hf", model=str(tiny_llama_dir), dtype="fp32", max_new_tokens=5,
                                             batch_size=2, kv_cache="static", compile=False))
    assert static.gen_kwargs["cache_implementation"] == "static"
    captions = ["A blue door.", "Two cups of coffee on a small wooden table near a window.", "Text: EXIT"]
    assert [g.text for g in static.ask(captions)] == [g.text for g in writer.ask(captions)]


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_loading_a_checkpoint_warms_up_when_decoding_compiles(tiny_llama_dir, monkeypatch, kv_cache):
    """As the captioner's: batches of 5 and 1 prompts at load with a compiled static cache (forced here,
    compiling is GPU-only), none otherwise."""
    import curate.backends.llm_hf as llm_hf

    seen = record_warm_up(monkeypatch, llm_hf, HfQuestionWriter, "ask")
    HfQuestionWriter(RetargetConfig(backend="hf", model=str(tiny_llama_dir), dtype="fp32", max_new_tokens=5,
                                    batch_size=2, kv_cache=kv_cache))
    assert seen == ([(5, 4), (1, 4)] if kv_cache == "static" else [])
