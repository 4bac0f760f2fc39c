"""Prefill in groups of similar length, decode as one batch: the joins' layout, and the same greedy text
as one padded prefill on tiny random Qwen2-VL and Llama models (weights scaled so that the text
depends on the prompt; it is noise either way)."""

import pytest
import torch

from curate.backends import hf_generate, split_prefill
from curate.backends.hf_generate import generate_in_batches, generation_kwargs
from curate.backends.llm_hf import HfQuestionWriter, caption_tokens
from curate.backends.split_prefill import join_caches, join_inputs, left_pad
from curate.backends.vlm_hf import HfVlmCaptioner
from curate.config import RetargetConfig, VlmConfig
from curate.testing.random_models import random_llama, random_qwen2_vl
from tests.conftest import noise_image, prompt_sensitive


def test_left_pad_puts_the_fill_before_the_tokens():
    tokens = torch.tensor([[5, 6], [7, 8]])
    assert left_pad(tokens, 4, 0).tolist() == [[0, 0, 5, 6], [0, 0, 7, 8]]
    assert left_pad(tokens, 2, 0) is tokens


def test_join_inputs_pads_each_group_to_the_longest_and_keeps_group_order():
    short = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[1, 1]]),
             "pixel_values": torch.zeros(3), "image_grid_thw": torch.tensor([[1, 2, 2]])}
    long = {"input_ids": torch.tensor([[0, 3, 4], [5, 6, 7]]), "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
            "pixel_values": torch.zeros(3), "image_grid_thw": torch.tensor([[1, 4, 4], [1, 2, 4]])}
    joined = join_inputs([short, long], pad_token_id=0)
    assert joined["input_ids"].tolist() == [[0, 1, 2], [0, 3, 4], [5, 6, 7]]
    assert joined["attention_mask"].tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 1]]
    assert joined["image_grid_thw"].tolist() == [[1, 2, 2], [1, 4, 4], [1, 2, 4]]
    assert "pixel_values" not in joined  # the prefill's alone


def test_join_caches_left_pads_keys_and_values_with_zeros():
    from transformers import DynamicCache

    caches = []
    for rows, length in ((1, 2), (2, 3)):
        cache = DynamicCache()
        cache.update(torch.ones(rows, 2, length, 4), torch.full((rows, 2, length, 4), 2.0), 0)
        caches.append(cache)
    joined = join_caches(caches, 3)
    keys, values = joined.layers[0].keys, joined.layers[0].values
    assert keys.shape == values.shape == (3, 2, 3, 4)
    assert keys[0, :, 0].abs().sum() == 0 and (keys[0, :, 1:] == 1).all()
    assert (values[1:] == 2).all()


@pytest.fixture
def cut_everywhere(monkeypatch):
    """Groups wherever a cut saves padding (the default weight keeps tiny prompts in one group), and a
    record of the groups each batch was prefilled in."""
    monkeypatch.setattr(hf_generate, "PREFILL_GROUP_OVERHEAD_TOKENS", 0)
    groups_seen = []
    real = split_prefill.generate_split_prefill

    def recording(model, generate, groups, gen_kwargs, pad_token_id):
        groups_seen.append([g["input_ids"].shape for g in groups])
        return real(model, generate, groups, gen_kwargs, pad_token_id)

    monkeypatch.setattr(hf_generate, "generate_split_prefill", recording)
    return groups_seen


def test_captions_equal_one_padded_prefill(cut_everywhere):
    cfg = VlmConfig(backend="hf", model="tiny", dtype="fp32", max_new_tokens=6, batch_size=8,
                    min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    boxes = [(10, 10, 300, 200), (100, 50, 180, 400), (0, 0, 900, 700), (600, 500, 660, 540),
             (0, 0, 120, 60), (200, 100, 800, 600)]
    crops = [[noise_image(900, 700, seed=i).crop(b)] for i, b in enumerate(boxes)]
    model, processor = random_qwen2_vl()
    captioner = HfVlmCaptioner(cfg, model=prompt_sensitive(model), processor=processor)
    padded = captioner.generate_crops(crops)
    captioner.split_prefill = True
    split = captioner.generate_crops(crops)
    assert len(cut_everywhere) == 1 and len(cut_everywhere[0]) > 1  # one batch, prefilled in groups
    assert len({g.text for g in padded}) > 1
    assert [(g.text, g.tokens, g.finished) for g in split] == [(g.text, g.tokens, g.finished) for g in padded]


def test_questions_equal_one_padded_prefill(cut_everywhere):
    """The same join on a text-only model (no multimodal offsets)."""
    cfg = RetargetConfig(backend="hf", model="tiny", dtype="fp32", max_new_tokens=6, batch_size=8)
    model, tokenizer = random_llama(seed=1)
    writer = HfQuestionWriter(cfg, model=prompt_sensitive(model), tokenizer=tokenizer, share_prefix=False)
    captions = ["A blue door.", "Two cups of coffee on a small wooden table near a window, " * 3, "Text: EXIT",
                "A cyclist in a yellow jacket crossing the bridge at dusk."]
    kwargs = generation_kwargs(cfg, tokenizer.pad_token_id)
    padded = generate_in_batches(writer.model, tokenizer, captions, cfg, caption_tokens, writer._inputs, kwargs)
    split = generate_in_batches(writer.model, tokenizer, captions, cfg, caption_tokens, writer._inputs, kwargs,
                                split_prefill=True)
    assert len(cut_everywhere) == 1 and len(cut_everywhere[0]) > 1
    assert len({g.text for g in padded}) > 1
    assert [(g.text, g.tokens) for g in split] == [(g.text, g.tokens) for g in padded]
