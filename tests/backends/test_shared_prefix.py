"""A batch's common prompt prefix run once: the layout math, and the same greedy text as the plain path
on a tiny random Llama (its text is noise: the test compares token for token)."""

import pytest
import torch

from curate.backends.llm_hf import HfQuestionWriter
from curate.backends.shared_prefix import (
    SharedPrefix,
    common_prefix_length,
    prefix_then_padded,
    unpadded_rows,
)
from curate.config import RetargetConfig
from curate.testing.random_models import random_llama
from tests.conftest import prompt_sensitive


def test_common_prefix_leaves_every_row_a_token_of_its_own():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter row keeps its last token
    assert common_prefix_length([[7, 8]]) == 1
    assert common_prefix_length([[1, 2], [3, 4]]) == 0
    assert common_prefix_length([]) == 0


def test_prefix_first_then_each_rows_rest_right_aligned():
    laid = prefix_then_padded([[1, 2, 3], [1, 2, 4, 5, 6]], 2, pad_id=0)
    assert laid["input_ids"].tolist() == [[1, 2, 0, 0, 3], [1, 2, 4, 5, 6]]
    assert laid["attention_mask"].tolist() == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    assert unpadded_rows(laid["input_ids"], laid["attention_mask"]) == [[1, 2, 3], [1, 2, 4, 5, 6]]


def test_left_padding_is_dropped_from_rows():
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert unpadded_rows(ids, mask) == [[5, 6], [7, 8, 9, 10]]


CAPTIONS = ["A blue door.", "Two cups of coffee on a small wooden table near a window.", "Text: EXIT",
            "A cyclist in a yellow jacket crossing the bridge at dusk, with lamps lit along the rail."]


@pytest.fixture(scope="module")
def sensitive_llama():
    """A tiny random Llama whose text depends on its prompt: at the default init scale every caption
    gets the same noise, which could not tell a wrong layout from a right one."""
    model, tokenizer = random_llama(seed=1)
    return prompt_sensitive(model), tokenizer


def _writer(model_and_tokenizer, share: bool, **cfg) -> HfQuestionWriter:
    model, tokenizer = model_and_tokenizer
    return HfQuestionWriter(RetargetConfig(backend="hf", model="tiny", dtype="fp32", max_new_tokens=6,
                                           batch_size=3, **cfg), model=model, tokenizer=tokenizer, share_prefix=share)


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_shared_prefix_gives_the_plain_paths_greedy_questions(sensitive_llama, kv_cache):
    extra = {} if kv_cache == "dynamic" else {"kv_cache": "static", "compile": False}
    plain, shared = _writer(sensitive_llama, False, **extra), _writer(sensitive_llama, True, **extra)
    expected = plain.ask(CAPTIONS)
    assert len({g.text for g in expected}) == len(CAPTIONS)  # the text depends on the caption
    got = shared.ask(CAPTIONS)
    assert [(g.text, g.tokens, g.finished) for g in got] == [(g.text, g.tokens, g.finished) for g in expected]
    assert shared.shared._prefix is not None and len(shared.shared._prefix) >= 16  # the path was taken
    # a second call reuses the prefix's cache (and, static, the batch cache) and still agrees
    assert [g.text for g in shared.ask(CAPTIONS[::-1])] == [g.text for g in expected[::-1]]


def test_static_batch_cache_is_reused_while_its_shape_holds(sensitive_llama):
    prefix = SharedPrefix(sensitive_llama[0])
    first = prefix.cache_for([1, 2, 3], batch_size=2, static_length=64)
    again = prefix.cache_for([1, 2, 3], batch_size=2, static_length=64)
    assert again is first and again.get_seq_length() == 3  # reset, then refilled with the prefix only
    keys = again.layers[0].keys
    torch.testing.assert_close(keys[0, :, :3], keys[1, :, :3])  # every row holds the prefix
    keys[0, :, :3] += 1  # and each row is its own memory, not a view of one
    assert not torch.equal(keys[0, :, :3], keys[1, :, :3])
    assert prefix.cache_for([1, 2, 3], batch_size=3, static_length=64) is not first
