"""The hf MLLM captioner's real code path (load, prompt, image processing, batching, decoding) on a
tiny random Qwen2-VL. Its text is noise: only plumbing is checked, never caption content."""

import pytest
from PIL import Image

from curate.backends.vlm_hf import PROMPT_TOKENS, HfVlmCaptioner
from curate.config import CaptionHygieneConfig, VlmConfig
from curate.ops.prompts import caption_messages
from tests.conftest import noise_image, record_warm_up


def make_cfg(path, **kw) -> VlmConfig:
    base = dict(backend="hf", model=str(path), dtype="fp32", max_new_tokens=6, batch_size=3,
                min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    return VlmConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def captioner(tiny_qwen2_vl_dir):
    return HfVlmCaptioner(make_cfg(tiny_qwen2_vl_dir))


def test_prompt_uses_the_checkpoints_chat_template_with_one_image(captioner):
    text = captioner.prompt_text
    assert text.count("<|image_pad|>") == 1 and "Describe in detail" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert captioner.describe().startswith("hf:")


def test_batched_generation_equals_one_by_one(captioner):
    """Left padding and per-row image grids must not change any row's greedy output."""
    images = [noise_image(900, 700, seed=i) for i in range(4)]
    boxes = [(10, 10, 300, 200), (100, 50, 180, 400), (0, 0, 900, 700), (600, 500, 660, 540)]
    crops = [[im.crop(b)] for im, b in zip(images, boxes)]
    together = captioner.generate_crops(crops)
    alone = [captioner.generate_crops([c])[0] for c in crops]
    assert [g.tokens for g in together] == [g.tokens for g in alone]
    assert [g.text for g in together] == [g.text for g in alone]
    assert all(1 <= g.tokens <= 6 for g in together)


def test_caption_batch_returns_one_result_per_request_with_a_reason_when_dropped(captioner):
    image = noise_image(1200, 900, seed=7)
    requests = [(image, (0, 0, 200, 200)), (image, (500, 400, 900, 800)), (image, (50, 600, 300, 880))]
    results = captioner.caption_batch(requests)
    assert len(results) == 3
    for r in results:
        assert r.tokens > 0
        assert (r.text is None) == (r.dropped is not None)


def test_thumbnail_mode_sends_two_images(tiny_qwen2_vl_dir):
    cap = HfVlmCaptioner(make_cfg(tiny_qwen2_vl_dir, thumbnail=True, thumbnail_side=112))
    assert cap.prompt_text.count("<|image_pad|>") == 2
    assert len(caption_messages(cap.cfg)[0]["content"]) == 3
    out = cap.caption_batch([(noise_image(800, 600), (100, 100, 300, 300))])
    assert len(out) == 1 and out[0].tokens > 0


def test_hygiene_applies_to_generated_text(tiny_qwen2_vl_dir):
    """With min_words above max_new_tokens every generation must be dropped as too short."""
    cap = HfVlmCaptioner(make_cfg(tiny_qwen2_vl_dir, hygiene=CaptionHygieneConfig(min_words=50,
                                                                                   min_latin_letter_frac=None)))
    results = cap.caption_batch([(Image.new("RGB", (400, 300), "gray"), (0, 0, 200, 150))])
    assert results[0].text is None and results[0].reason in {"too_short", "empty", "refusal", "repetition"}


def test_a_static_cache_gives_the_same_greedy_captions(captioner, tiny_qwen2_vl_dir):
    """kv_cache: static preallocates the cache (so the decoding step can be compiled on the GPU);
    greedy tokens stay the same. Run uncompiled here."""
    static = HfVlmCaptioner(make_cfg(tiny_qwen2_vl_dir, kv_cache="static", compile=False))
    images = [noise_image(900, 700, seed=i) for i in range(3)]
    crops = [[im.crop((10 * i, 20, 300 + 50 * i, 400))] for i, im in enumerate(images)]
    expected = captioner.generate_crops(crops)
    got = static.generate_crops(crops)
    assert [g.text for g in got] == [g.text for g in expected]
    assert [g.tokens for g in got] == [g.tokens for g in expected]


def test_crops_reach_the_model_at_the_configured_pixel_budget():
    """A processor built with a smaller budget (the random models' 448 x 448) must not shrink the
    crops: the benchmark's captioner did so, and measured crops of at most 256 vision tokens."""
    from curate.ops.prompts import crop_images
    from curate.testing.random_models import random_qwen2_vl

    model, processor = random_qwen2_vl("tiny")
    cfg = VlmConfig(backend="hf", model="random", dtype="fp32", max_new_tokens=2)  # 256 to 1280 tokens
    cap = HfVlmCaptioner(cfg, model=model, processor=processor)
    crop = crop_images(cfg, noise_image(2000, 1500), (100, 100, 1100, 900))  # about 1000 tokens of pixels
    inputs = cap._inputs([crop])
    merged_patches = int(inputs["image_grid_thw"].prod()) // 4  # 2x2 patches make one LLM token
    assert merged_patches == crop[0].width * crop[0].height // (28 * 28) > 256
    assert cap._crop_tokens(crop) == merged_patches + PROMPT_TOKENS  # the batch planner's estimate holds


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_loading_a_checkpoint_warms_up_when_decoding_compiles(tiny_qwen2_vl_dir, monkeypatch, kv_cache):
    """With a compiled static cache the captioner decodes batches of 5 and 1 synthetic crops at load, so
    a stage's first call compiles nothing (compiling is GPU-only: here the decision is forced and the
    warm-up runs uncompiled, which checks that its crops are valid inputs)."""
    import curate.backends.vlm_hf as vlm_hf

    seen = record_warm_up(monkeypatch, vlm_hf, HfVlmCaptioner, "generate_crops")
    HfVlmCaptioner(make_cfg(tiny_qwen2_vl_dir, kv_cache=kv_cache))
    assert seen == ([(5, 4), (1, 4)] if kv_cache == "static" else [])
