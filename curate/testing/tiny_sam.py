"""Randomly initialised SAM-family models for tests and benchmarks: the real architectures at toy
width, and ``make_confident`` for random-weight runs whose masks would otherwise all be filtered."""

from __future__ import annotations

import torch

from curate.amg.models import SamFamilyModel, efficientvit_sam_model, sam_model


def tiny_sam(seed: int = 0, embed_dim: int = 32) -> SamFamilyModel:
    """A randomly initialised SAM of the real architecture at toy width (tests on CPU)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, Sam

    torch.manual_seed(seed)
    image_encoder = ImageEncoderViT(
        depth=2, embed_dim=32, img_size=1024, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,),
        window_size=14, out_chans=embed_dim,
    )
    return sam_model(Sam(image_encoder, *_tiny_prompt_modules(embed_dim)).eval())


def tiny_efficientvit_sam(seed: int = 0, embed_dim: int = 256) -> SamFamilyModel:
    """A randomly initialised EfficientViT-SAM (L-family backbone and neck) at toy width, 512 input.
    The encoder's output norm is fixed at 256 channels, so the decoder keeps its real width."""
    from efficientsam.models.efficientvit.backbone import EfficientViTLargeBackbone
    from efficientsam.models.efficientvit.sam import EfficientViTSam, EfficientViTSamImageEncoder, SamNeck

    torch.manual_seed(seed)
    backbone = EfficientViTLargeBackbone(width_list=[8, 8, 16, 16, 32], depth_list=[1, 1, 1, 1, 1], qkv_dim=8)
    neck = SamNeck(fid_list=["stage4", "stage3", "stage2"], in_channel_list=[32, 16, 16], head_width=16,
                   head_depth=1, expand_ratio=1, middle_op="fmb", out_dim=embed_dim)
    image_encoder = EfficientViTSamImageEncoder(backbone, neck)
    net = EfficientViTSam(image_encoder, *_tiny_prompt_modules(embed_dim), image_size=(1024, 512))
    return efficientvit_sam_model(net.eval())


def _tiny_prompt_modules(embed_dim: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Prompt encoder and mask decoder at toy depth. Both families use SAM's modules (efficientsam
    ships an identical copy), built after the image encoder so seeded weights stay as they were."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    prompt_encoder = PromptEncoder(embed_dim=embed_dim, image_embedding_size=(64, 64),
                                   input_image_size=(1024, 1024), mask_in_chans=8)
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=64, num_heads=2),
        transformer_dim=embed_dim, iou_head_depth=3, iou_head_hidden_dim=32,
    )
    return prompt_encoder, mask_decoder


def make_confident(model: SamFamilyModel, logit_scale: float = 300.0, iou_bias: float = 1.0) -> SamFamilyModel:
    """For random-weight runs only: scale the decoder's mask logits and raise its predicted IoUs so
    masks pass PS3's thresholds (0.6 IoU, 0.85 stability) as a trained model's do. Without it a
    random decoder yields logits near 0 and no mask survives, which exercises nothing."""
    with torch.no_grad():
        for mlp in model.net.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(logit_scale)
        model.net.mask_decoder.iou_prediction_head.layers[-1].bias.add_(iou_bias)
    return model
