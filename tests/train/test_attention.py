"""The layer-by-layer encoder equals transformers' own, and the low-res KV cache is exact."""

from __future__ import annotations

import torch

from curate.train.attention import encode_with_cache, encode_with_context


def tiny_vit():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=32, patch_size=8, attn_implementation="eager")
    model = SiglipVisionModel(config)
    return getattr(model, "vision_model", model).eval()


def test_our_loop_matches_the_transformers_encoder():
    vm = tiny_vit()
    embeds = torch.randn(2, 16, 32)
    ours, layers, cache = encode_with_cache(vm.encoder, embeds)
    theirs = vm.encoder(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert len(layers) == len(cache) == 3 and cache[0][0].shape == (2, 4, 16, 8)


def test_kv_cache_equals_attending_to_a_low_res_prefix_that_cannot_see_back():
    """High-res tokens with the cache = the concatenated sequence [low, high] run through the stock
    encoder under a mask where low-res queries see only low-res keys: the cache is that prefix's keys
    and values, computed once."""
    vm = tiny_vit()
    low, high = torch.randn(2, 16, 32), torch.randn(2, 5, 32)
    _, _, cache = encode_with_cache(vm.encoder, low)
    cached = encode_with_context(vm.encoder, high, cache)
    n = 21
    allowed = torch.ones(n, n, dtype=torch.bool)
    allowed[:16, 16:] = False
    mask = torch.zeros(1, 1, n, n).masked_fill(~allowed, float("-inf")).expand(2, 1, n, n)
    full = vm.encoder(inputs_embeds=torch.cat([low, high], 1), attention_mask=mask).last_hidden_state
    torch.testing.assert_close(cached, full[:, 16:], atol=1e-5, rtol=1e-5)


def test_regions_use_the_cache_of_their_own_image():
    vm = tiny_vit()
    low = torch.randn(2, 16, 32)
    _, _, cache = encode_with_cache(vm.encoder, low)
    high = torch.randn(3, 5, 32)
    rows = torch.tensor([1, 0, 1])
    together = encode_with_context(vm.encoder, high, cache, rows)
    alone = encode_with_context(vm.encoder, high[:1], [(k[1:2], v[1:2]) for k, v in cache])
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], encode_with_context(vm.encoder, high[:1], cache, rows[1:2])[0])
