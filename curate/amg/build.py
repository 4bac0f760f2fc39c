"""Build SAM-family models by name, from a checkpoint or randomly initialised (tests, benchmarks).

Checkpoints: a local file, or ``hf://OWNER/REPO/FILE`` fetched with huggingface_hub (its cache).
SAM: the official ``sam_vit_{b,l,h}_*.pth`` files; EfficientViT-SAM: ``efficientvit_sam_{l0..xl1}.pt``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from curate.amg.models import SamFamilyModel, efficientvit_sam_model, sam_model

SAM_VARIANTS = ("vit_b", "vit_l", "vit_h")
EFFICIENTVIT_VARIANTS = ("l0", "l1", "l2", "xl0", "xl1")


def resolve_checkpoint(checkpoint: str) -> Path:
    if checkpoint.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        owner, repo, filename = checkpoint[5:].split("/", 2)
        return Path(hf_hub_download(f"{owner}/{repo}", filename))
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (a local file or hf://OWNER/REPO/FILE)")
    return path


def load_state(checkpoint: str) -> dict:
    state = torch.load(resolve_checkpoint(checkpoint), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def build_sam(variant: str, checkpoint: str | None = None) -> SamFamilyModel:
    from segment_anything import sam_model_registry

    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant {variant!r}; one of {SAM_VARIANTS}")
    net = sam_model_registry[variant](checkpoint=None)
    if checkpoint:
        net.load_state_dict(load_state(checkpoint))
    return sam_model(net.eval())


def build_efficientvit_sam(variant: str, checkpoint: str | None = None) -> SamFamilyModel:
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model

    if variant not in EFFICIENTVIT_VARIANTS:
        raise ValueError(f"unknown EfficientViT-SAM variant {variant!r}; one of {EFFICIENTVIT_VARIANTS}")
    net = create_efficientvit_sam_model(f"efficientvit-sam-{variant}", pretrained=False)
    if checkpoint:
        net.load_state_dict(load_state(checkpoint))
    return efficientvit_sam_model(net.eval())
