"""Grouped decoding attention: the same numbers as transformers' SDPA path with its KV copies, and the
same greedy text from tiny random Llama and Qwen2-VL models (weights scaled up so that the text
depends on the prompt; it is noise either way)."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from curate.backends.grouped_attention import NAME, grouped_decode_attention
from curate.backends.llm_hf import HfQuestionWriter
from curate.backends.vlm_hf import HfVlmCaptioner
from curate.config import RetargetConfig, VlmConfig
from curate.testing.random_models import random_llama, random_qwen2_vl
from tests.conftest import apply_marks, gpu_only, noise_image, prompt_sensitive


class Grouped(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.training = groups, True, False


@pytest.mark.parametrize("mask_kind", ["bool", "none"])
def test_one_token_attention_equals_sdpa_with_copied_heads(mask_kind):
    gen = torch.Generator().manual_seed(0)
    batch, kv_heads, groups, length, dim = 3, 2, 4, 9, 16
    query = torch.randn(batch, kv_heads * groups, 1, dim, generator=gen)
    key, value = (torch.randn(batch, kv_heads, length, dim, generator=gen) for _ in range(2))
    mask = None
    if mask_kind == "bool":
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        mask[0, ..., :4] = False  # left padding of row 0
        mask[2, ..., 6:] = False  # unused static cache slots of row 2
    module = Grouped(groups)
    ours, _ = grouped_decode_attention(module, query, key, value, mask, scaling=dim ** -0.5)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim ** -0.5)
    assert ours.shape == theirs.shape == (batch, 1, kv_heads * groups, dim)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_several_query_tokens_take_the_sdpa_path():
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(2, 4, 5, 8, generator=gen)
    key, value = (torch.randn(2, 2, 5, 8, generator=gen) for _ in range(2))
    ours, _ = grouped_decode_attention(Grouped(2), query, key, value, None)
    theirs, _ = sdpa_attention_forward(Grouped(2), query, key, value, None)
    torch.testing.assert_close(ours, theirs)


CAPTIONS = ["A blue door.", "Two cups of coffee on a small wooden table near a window.", "Text: EXIT",
            "A cyclist in a yellow jacket crossing the bridge at dusk, with lamps lit along the rail."]


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_question_writer_text_is_unchanged(kv_cache):
    cfg = RetargetConfig(backend="hf", model="tiny", dtype="fp32", max_new_tokens=6, batch_size=3, kv_cache=kv_cache,
                         compile=False)
    texts = {}
    for grouped in (False, True):
        model, tokenizer = random_llama(seed=1)
        writer = HfQuestionWriter(cfg, model=prompt_sensitive(model), tokenizer=tokenizer, grouped_decode=grouped)
        assert (model.config._attn_implementation == NAME) == grouped
        texts[grouped] = [g.text for g in writer.ask(CAPTIONS)]
    assert len(set(texts[False])) == len(CAPTIONS)  # the text depends on the caption
    assert texts[True] == texts[False]


def test_captioner_text_is_unchanged_and_the_vision_tower_keeps_sdpa():
    cfg = VlmConfig(backend="hf", model="tiny", dtype="fp32", max_new_tokens=6, batch_size=3,
                    min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    images = [noise_image(900, 700, seed=i) for i in range(4)]
    boxes = [(10, 10, 300, 200), (100, 50, 180, 400), (0, 0, 900, 700), (600, 500, 660, 540)]
    crops = [[im.crop(b)] for im, b in zip(images, boxes)]
    texts = {}
    for grouped in (False, True):
        model, processor = random_qwen2_vl()
        captioner = HfVlmCaptioner(cfg, model=prompt_sensitive(model), processor=processor, grouped_decode=grouped)
        assert (model.config.text_config._attn_implementation == NAME) == grouped
        assert model.config.vision_config._attn_implementation == "sdpa"
        texts[grouped] = [g.text for g in captioner.generate_crops(crops)]
    assert len(set(texts[False])) > 1
    assert texts[True] == texts[False]


@apply_marks(gpu_only())
@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_on_the_gpu_compiled_decoding_keeps_the_text(kv_cache):
    """The production shape of the change: CUDA kernels, and with the static cache the decoding step
    compiled with CUDA graphs. float32 keeps the comparison exact enough for greedy text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = random_llama(seed=1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    cfg = RetargetConfig(backend="hf", model="small", dtype="fp32", max_new_tokens=12, batch_size=4, kv_cache=kv_cache)
    texts = {}
    for grouped in (False, True):
        torch.manual_seed(0)
        model = prompt_sensitive(LlamaForCausalLM._from_config(config, dtype=torch.float32)).to("cuda").eval()
        writer = HfQuestionWriter(cfg, model=model, tokenizer=tokenizer, grouped_decode=grouped)
        texts[grouped] = [g.text for g in writer.ask(CAPTIONS * 2)]
        torch._dynamo.reset()
    assert len(set(texts[False])) > 1
    assert texts[True] == texts[False]


@apply_marks(gpu_only())
def test_on_the_gpu_after_the_warm_up_new_batch_shapes_compile_nothing():
    """A run's batches each have their own rows and cache length: with the decoding step compiled for
    dynamic shapes at the warm-up, none of them compiles again (only CUDA graphs are recorded), and
    the text equals the dynamic cache's."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    texts = {}
    for kv_cache in ("dynamic", "static"):
        model, tokenizer = random_llama(seed=1)
        model = prompt_sensitive(model.float()).to("cuda")
        cfg = RetargetConfig(backend="hf", model="tiny", dtype="fp32", max_new_tokens=8, batch_size=3,
                             max_batch_tokens=None, kv_cache=kv_cache)  # 4 prompts: batches of 3 and 1
        writer = HfQuestionWriter(cfg, model=model, tokenizer=tokenizer)
        writer.warm_up()
        after_warm_up = counters["stats"]["unique_graphs"]
        # three calls: batches of 3 and 1 rows, then 2, then 3, with caches of several lengths
        calls = [CAPTIONS, CAPTIONS[:2], [c * 12 for c in CAPTIONS[1:]]]
        texts[kv_cache] = [g.text for call in calls for g in writer.ask(call)]
        if kv_cache == "static":
            assert after_warm_up >= 1  # the warm-up compiled the step
            assert counters["stats"]["unique_graphs"] == after_warm_up
    assert texts["static"] == texts["dynamic"]
