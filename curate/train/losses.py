"""Losses of PS3 pre-training (Fig. 5): sigmoid contrast (SigLIP) and selection-map supervision."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_contrastive_rows(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                             positives: torch.Tensor | None = None,
                             ignore: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP loss per image row i: -sum_j log sigmoid(z_ij * (s * <x_i, y_j> + b)), z = +1 for positives
    (the diagonal, or ``positives`` when several pairs share a text), -1 otherwise; pairs in ``ignore``
    count neither way (PS3 removes intra-image contrast)."""
    logits = image @ text.t() * scale + bias
    if positives is None:
        positives = torch.eye(len(image), dtype=torch.bool, device=image.device)
    labels = positives.to(logits.dtype) * 2 - 1
    pair = -F.logsigmoid(labels * logits)
    if ignore is not None:
        pair = pair.masked_fill(ignore & ~positives, 0.0)
    return pair.sum(1)


def same_text_positives(texts: list[str], device) -> torch.Tensor:
    """Pairs whose texts are identical are positives too (not false negatives)."""
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    codes = torch.tensor([ids[t] for t in texts], device=device)
    return codes[:, None] == codes[None, :]


def same_image_pairs(region_image: torch.Tensor) -> torch.Tensor:
    """(R, R) bool: pairs of different rows from the same image (intra-image contrast)."""
    same = region_image[:, None] == region_image[None, :]
    return same & ~torch.eye(len(region_image), dtype=torch.bool, device=region_image.device)


def selection_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of patch selection logits against ground-truth score maps (soft targets)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())
