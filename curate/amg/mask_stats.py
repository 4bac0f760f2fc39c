"""Per-mask statistics at full crop resolution without materialising full-resolution masks.

The references upscale every low-res mask (256x256 logits) to the prompt frame (1024), cut the
padding and upscale again to the crop's size, then threshold three times (stability score at
threshold +- offset, and the mask itself) and take the mask's box. Only four numbers per mask
survive that work: the two stability counts, the area and the box. ``mask_stats`` returns exactly
those, from the low-res logits:

- ``torch`` path: the references' arithmetic in memory-bounded chunks (any device);
- ``triton`` path (CUDA): one fused kernel interpolates each pixel on the fly and reduces it at
  once; tiles whose low-res neighbourhood lies wholly above the highest or below the lowest
  threshold are counted without visiting their pixels (bilinear weights are non-negative and sum
  to one, so every pixel of such a tile is a convex combination of values on the same side).

Output: int64 (N, 7) = [count > thr + offset, count > thr - offset, count > thr (area),
x_min, y_min, x_max, y_max] in the crop frame, box corners inclusive; an empty mask has box zeros.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from curate.amg.grid import resized_shape

STATS_COLUMNS = ("count_high", "count_low", "area", "x_min", "y_min", "x_max", "y_max")


def upscale_logits(low_res: torch.Tensor, crop_hw: tuple[int, int], prompt_size: int) -> torch.Tensor:
    """(N, 256, 256) low-res logits -> (N, H, W) float32 logits at the crop's resolution, as the
    references do: bilinear to the prompt frame, cut the padding, bilinear to the crop size."""
    x = F.interpolate(low_res[:, None].float(), (prompt_size, prompt_size), mode="bilinear", align_corners=False)
    h, w = resized_shape(crop_hw[0], crop_hw[1], prompt_size)
    return F.interpolate(x[..., :h, :w], crop_hw, mode="bilinear", align_corners=False)[:, 0]


def stats_from_logits(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """(N, H, W) full-resolution logits -> (N, 7) statistics (see module doc)."""
    n, h, w = logits.shape
    high = (logits > threshold + offset).sum(dim=(1, 2))
    low = (logits > threshold - offset).sum(dim=(1, 2))
    masks = logits > threshold
    area = masks.sum(dim=(1, 2))
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ys = torch.arange(h, device=logits.device)
    xs = torch.arange(w, device=logits.device)
    box = torch.stack([torch.where(cols, xs, w).amin(dim=1), torch.where(rows, ys, h).amin(dim=1),
                       torch.where(cols, xs, -1).amax(dim=1), torch.where(rows, ys, -1).amax(dim=1)], dim=1)
    box = box * (area > 0)[:, None]
    return torch.cat([torch.stack([high, low, area], dim=1), box], dim=1).long()


def mask_stats_torch(low_res: torch.Tensor, crop_hw: tuple[int, int], prompt_size: int, threshold: float,
                     offset: float, pixel_budget: int = 2**28) -> torch.Tensor:
    """The references' arithmetic, ``pixel_budget`` full-resolution logits at a time."""
    h, w = crop_hw
    step = max(1, pixel_budget // max(h * w, prompt_size**2))
    parts = [stats_from_logits(upscale_logits(low_res[i:i + step], crop_hw, prompt_size), threshold, offset)
             for i in range(0, len(low_res), step)]
    return torch.cat(parts) if parts else torch.zeros((0, 7), dtype=torch.long, device=low_res.device)


def triton_available(device: torch.device) -> bool:
    """The fused kernel is chosen automatically on CUDA devices with Triton installed. (Asked for
    explicitly, it also runs on the CPU under Triton's interpreter, TRITON_INTERPRET=1: tests.)"""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """``triton`` or ``torch`` for a statistics backend name: ``auto`` is triton where it runs."""
    if backend == "auto":
        return "triton" if triton_available(device) else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"unknown mask statistics backend {backend!r}: auto, triton or torch")
    return backend


def mask_stats(low_res: torch.Tensor, crop_hws: torch.Tensor | tuple[int, int], prompt_size: int, threshold: float,
               offset: float, backend: str = "auto", pixel_budget: int = 2**28,
               keep: torch.Tensor | None = None) -> torch.Tensor:
    """Statistics of masks that may come from crops of different sizes.

    low_res: (N, S, S) logits; crop_hws: (N, 2) int crop height/width per mask (same device), or
    one (height, width) for all (then the triton path never waits for the device).
    keep: optional (N,) bool; masks not kept are not looked at and get zero statistics.
    backend: ``triton`` (fused kernel), ``torch`` (references' arithmetic), ``auto`` (triton where
    it runs, else torch).
    """
    backend = resolve_backend(backend, low_res.device)
    if backend == "triton":
        from curate.amg import triton_stats

        if isinstance(crop_hws, torch.Tensor):
            return triton_stats.mask_stats_triton(low_res, crop_hws, prompt_size, threshold, offset, keep=keep)
        out = triton_stats.empty_stats(len(low_res), low_res.device)
        triton_stats.stats_one_size(low_res, crop_hws, prompt_size, threshold, offset, out, keep=keep)
        return triton_stats.finish_stats(out)
    out = torch.zeros((len(low_res), 7), dtype=torch.long, device=low_res.device)
    if not isinstance(crop_hws, torch.Tensor):
        crop_hws = torch.tensor([crop_hws], device=low_res.device).expand(len(low_res), 2)
    chosen = torch.ones(len(low_res), dtype=torch.bool, device=low_res.device) if keep is None else keep
    shapes, owner = torch.unique(crop_hws[chosen], dim=0, return_inverse=True)
    for k, (h, w) in enumerate(shapes.tolist()):
        idx = chosen.nonzero().squeeze(1)[owner == k]
        out[idx] = mask_stats_torch(low_res[idx], (h, w), prompt_size, threshold, offset, pixel_budget)
    return out
