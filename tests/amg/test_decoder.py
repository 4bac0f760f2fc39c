"""Our batched, reassociated decoder computes what segment_anything's MaskDecoder computes."""

from __future__ import annotations

import pytest
import torch

from curate.amg.build import make_confident, tiny_efficientvit_sam, tiny_sam


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


def test_fused_upscaling_kernel_equals_the_matrix_form():
    """The Triton kernel (interpreted without a GPU) against the torch form, at SAM's real decoder
    width (256 -> 64 -> 32 channels), for three prompts on the 64x64 grid."""
    pytest.importorskip("triton")
    import os

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and Triton's interpreter was not chosen before import")
    from curate.amg.decoder import _upscaled_masks
    from curate.amg.triton_upscale import upscaled_masks_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dec = tiny_efficientvit_sam(seed=1).net.mask_decoder.to(device)
    torch.manual_seed(1)
    with torch.no_grad():
        for module in (dec.output_upscaling[0], dec.output_upscaling[1], dec.output_upscaling[3]):
            for param in module.parameters():
                param.normal_(0, 0.2)  # layer norm affine and biases away from their 1/0 initialisation
        keys = torch.randn(3, 64 * 64, 256, device=device)
        hyper = torch.randn(3, 3, 32, device=device)
        ours = upscaled_masks_triton(dec.output_upscaling, keys, hyper, (64, 64))
        reference = _upscaled_masks(dec, keys, hyper, (64, 64))
    assert ours.shape == reference.shape == (3, 3, 256, 256)
    torch.testing.assert_close(ours, reference, atol=1e-3 * reference.abs().max().item(), rtol=1e-3)
