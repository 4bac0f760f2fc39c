"""Our batched, reassociated decoder computes what segment_anything's MaskDecoder computes."""

from __future__ import annotations

import pytest
import torch

from curate.testing.tiny_sam import make_confident, tiny_efficientvit_sam, tiny_sam
from tests.conftest import gpu_only


def assert_every_config_matches(run, configs, reference: torch.Tensor, **tolerance) -> None:
    """``run(config)`` for each configuration the autotuner may pick (None: the autotuned launch),
    each run twice: the same result both times (a miscompiled kernel need not give the same wrong
    answer twice), with reference's shape, and within ``tolerance`` of it."""
    for config in configs:
        ours = run(config)
        assert torch.equal(ours, run(config)), config
        assert ours.shape == reference.shape, config
        torch.testing.assert_close(ours.float(), reference.float(), **tolerance, msg=lambda m: f"{config}: {m}")


@pytest.mark.parametrize("build", [tiny_sam, tiny_efficientvit_sam], ids=["sam", "efficientvit_sam"])
def test_decoder_equals_reference_mask_decoder(build):
    model = make_confident(build(seed=3), logit_scale=1.0)
    net = model.net
    torch.manual_seed(0)
    d = net.mask_decoder.transformer_dim
    embeddings = torch.randn(2, d, 64, 64)  # two crops
    owner = torch.tensor([0, 1, 1, 0, 1])
    coords = torch.rand(5, 2) * model.prompt_size
    with torch.inference_mode():
        ctx = model.decoder_context(embeddings)
        decoded = {crop: model.decode(ctx.crop(crop), coords[owner == crop]) for crop in (0, 1)}
        for i in range(len(owner)):
            row = int((owner[:i] == owner[i]).sum())
            ours, ours_iou = (x[row] for x in decoded[int(owner[i])])
            sparse, _ = net.prompt_encoder(points=(coords[i:i + 1, None], torch.ones(1, 1, dtype=torch.int)),
                                           boxes=None, masks=None)
            # encode() already added the no-mask embedding to the crop's embedding
            dense = torch.zeros_like(embeddings[:1])
            masks, iou = net.mask_decoder(image_embeddings=embeddings[owner[i]:owner[i] + 1],
                                          image_pe=net.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=True)
            scale = masks.abs().max()
            assert scale > 0
            torch.testing.assert_close(ours / scale, masks[0] / scale, atol=2e-5, rtol=0)
            torch.testing.assert_close(ours_iou, iou[0], atol=1e-5, rtol=1e-5)


def test_block_diagonal_puts_each_heads_tokens_in_its_own_block():
    """(P, S, H, d) -> (P, H*S, H*d): prompt p's matrix is block-diagonal, head h's block its (S, d)
    token vectors, so a product with a (H*d, D) weight applies each head's rows to its own tokens."""
    from curate.amg.decoder import _block_diagonal

    x = torch.randn(2, 3, 4, 5)
    out = _block_diagonal(x)
    assert out.shape == (2, 4 * 3, 4 * 5)
    for p in range(2):
        expected = torch.block_diag(*(x[p, :, h, :] for h in range(4)))
        assert torch.equal(out[p], expected)
    weight = torch.randn(4 * 5, 7)
    per_head = torch.einsum("pshj,hjc->phsc", x, weight.view(4, 5, 7)).reshape(2, 4 * 3, 7)
    torch.testing.assert_close(out @ weight, per_head)


@pytest.mark.parametrize("dtype", [
    pytest.param(torch.float32, id="float32", marks=pytest.mark.slow),  # ~30 s under the interpreter
    pytest.param(torch.bfloat16, id="bfloat16",
                 marks=gpu_only("bf16 products need a GPU (the interpreter's numpy has no bf16)"))])
def test_fused_upscaling_kernel_equals_the_matrix_form(triton_runs, dtype):
    """The Triton kernel (interpreted without a GPU) against the torch form, at SAM's real decoder
    width (256 -> 64 -> 32 channels), for three prompts on the 64x64 grid; bf16 on the GPU only.
    Autotuned (through the custom operator) and in every configuration, each run twice."""
    from curate.amg.decoder import _upscaled_masks
    from curate.amg.triton_upscale import CONFIGS, upscaled_masks_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dec = tiny_efficientvit_sam(seed=1).net.mask_decoder.to(device)
    torch.manual_seed(1)
    with torch.no_grad():
        for module in (dec.output_upscaling[0], dec.output_upscaling[1], dec.output_upscaling[3]):
            for param in module.parameters():
                param.normal_(0, 0.2)  # layer norm affine and biases away from their 1/0 initialisation
        keys = torch.randn(3, 64 * 64, 256, device=device)
        hyper = torch.randn(3, 3, 32, device=device)
        reference = _upscaled_masks(dec, keys, hyper, (64, 64))
        dec.to(dtype)
        keys, hyper = keys.to(dtype), hyper.to(dtype)
        assert reference.shape == (3, 3, 256, 256)
        tolerance = 1e-3 if dtype == torch.float32 else 3e-2  # bf16: intermediates rounded to 8 bits
        assert_every_config_matches(
            lambda config: upscaled_masks_triton(dec.output_upscaling, keys, hyper, (64, 64), config=config),
            [None, *CONFIGS], reference, atol=tolerance * reference.abs().max().item(), rtol=tolerance)


@pytest.mark.parametrize("projected_queries", [True, False], ids=["first_block", "later_block"])
def test_fused_image_to_token_kernel_equals_torch(triton_runs, projected_queries):
    """The Triton image-to-token block against its torch form, at SAM's real width: first block
    (crop-shared projected queries and residual), later block (per-prompt image tokens plus pe).
    Without a GPU: interpreted, float32. On CUDA: bf16, what the decoder runs it in."""
    from curate.amg.decoder import SLOTS, _image_to_token_operands, image_to_token_torch
    from curate.amg.triton_attention import CONFIGS, image_to_token_block

    device = "cuda" if torch.cuda.is_available() else "cpu"
    block = tiny_efficientvit_sam(seed=2).net.mask_decoder.transformer.layers[1].to(device)
    attn = block.cross_attn_image_to_token
    torch.manual_seed(2)
    n, d, p = 64 * 64, 256, 2
    with torch.no_grad():
        block.norm4.weight.normal_(1, 0.2)
        block.norm4.bias.normal_(0, 0.2)
        tokens = torch.randn(p, 7, d, device=device)
        pe = torch.randn(n, d, device=device)
        if projected_queries:
            queries, residual = torch.randn(1, n, d // 2, device=device), torch.randn(1, n, d, device=device)
        else:
            queries = residual = torch.randn(p, n, d, device=device)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        block.to(dtype)
        tokens, pe, queries, residual = (x.to(dtype) for x in (tokens, pe, queries, residual))
        operands = _image_to_token_operands(attn, tokens, tokens * 0.5, projected_queries)
        args = (queries, residual, *operands, attn.out_proj.bias, block.norm4)
        add_pe = not projected_queries
        reference = image_to_token_torch(*args, pe=pe, add_pe=add_pe)
        assert reference.shape == (p, n, d)
        # bf16: the torch form rounds its logits and sums to bf16 where the kernel keeps float32
        tolerance = dict(atol=5e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-4, rtol=1e-4)
        assert_every_config_matches(
            lambda config: image_to_token_block(*args, SLOTS, pe=pe, add_pe=add_pe, config=config),
            CONFIGS, reference, **tolerance)


@pytest.mark.parametrize("chunks", [1, 2])
def test_token_to_image_kernel_equals_attention(triton_runs, chunks):
    """The flash-attention kernel (image and pe products of each tile summed; chunks of image
    tokens merged after) against SDPA on materialised keys, with 56 query rows padded to 64, in
    every configuration the autotuner may pick, each run twice (three of five configurations of an
    earlier form of the kernel were miscompiled on an H100: errors up to 2, different every run).
    Without a GPU: interpreted, float32 operands; on CUDA: bf16, as the decoder runs it."""
    from curate.amg.triton_attention import FLASH_CONFIGS, token_to_image_attention

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    g = torch.Generator().manual_seed(5)
    p, rows, n, d = 3, 56, 1024 if device == "cuda" else 512, 256
    queries = (torch.randn(p, rows, d, generator=g) * d**-0.5).to(device, dtype)
    image = torch.randn(p, n, d, generator=g).to(device, dtype)
    pe = torch.randn(n, d, generator=g).to(device, dtype)
    reference = torch.nn.functional.scaled_dot_product_attention(queries.float(), image.float() + pe.float(),
                                                                 image.float(), scale=1.0)
    assert reference.std() > 0.05  # the attention is not uniform (its output is not the mean token)
    assert reference.shape == (p, rows, d)
    assert token_to_image_attention(queries, image, pe, chunks=chunks).dtype == dtype
    # bf16: the kernel rounds the softmax weights to bf16 for the second product
    tolerance = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    assert_every_config_matches(lambda config: token_to_image_attention(queries, image, pe, chunks=chunks,
                                                                        config=config),
                                FLASH_CONFIGS, reference, **tolerance)
