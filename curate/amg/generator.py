"""BatchedMaskGenerator: automatic mask generation over a batch of images, on one device."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import batched_nms

from curate.amg.grid import crop_boxes, layer_point_grids, resized_shape
from curate.amg.models import SamFamilyModel
from curate.amg.postprocess import box_area, masks_to_boxes, near_crop_edge, stability_score


@dataclass(frozen=True)
class AmgParams:
    """The reference generators' arguments (defaults: PS3 Table 10), plus batching knobs."""

    points_per_side: int = 24
    points_per_batch: int = 128  # kept for parity of meaning; decoding batches use decode_batch
    pred_iou_thresh: float = 0.6
    stability_score_thresh: float = 0.85
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 1
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    decode_batch: int = 256  # prompts per decoder call, across crops and images
    encode_batch: int = 8  # crops per image-encoder call

    def __post_init__(self) -> None:
        if self.min_mask_region_area > 0:
            raise ValueError("min_mask_region_area > 0 (hole/island removal) is not supported yet; PS3 uses 0")


@dataclass
class ImageMasks:
    """Masks of one image, full-resolution frame. boxes (N, 4) xyxy with x1/y1 exclusive, areas (N,)
    pixels, iou_preds and stability (N,), points (N, 2) prompts, crop_boxes (N, 4); masks (N, H, W)
    bool only when the generator was asked for them."""

    boxes: np.ndarray
    areas: np.ndarray
    iou_preds: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray
    masks: np.ndarray | None = None


@dataclass
class _Crop:
    image: int
    image_hw: tuple[int, int]
    layer: int
    box: list[int]
    points: np.ndarray  # (P, 2) crop frame, pixels
    kept: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    @property
    def hw(self) -> tuple[int, int]:
        return self.box[3] - self.box[1], self.box[2] - self.box[0]


class BatchedMaskGenerator:
    def __init__(self, model: SamFamilyModel, params: AmgParams = AmgParams(), return_masks: bool = False,
                 pixel_budget: int = 2**28, profile: bool = False):
        """pixel_budget: full-resolution logits held at once (elements; 2**28 float32 = 1 GiB).
        profile: synchronise the device between phases and add their seconds to ``self.timings``."""
        self.model = model
        self.pixel_budget = pixel_budget
        self.profile = profile
        self.timings: dict[str, float] = {}
        self.params = params
        self.return_masks = return_masks
        self.grids = layer_point_grids(params.points_per_side, params.crop_n_layers,
                                       params.crop_n_points_downscale_factor)

    @torch.inference_mode()
    def generate(self, images: list[np.ndarray]) -> list[ImageMasks]:
        """Masks for each uint8 RGB image (H, W, 3)."""
        with self._phase("prepare"):
            crops = self._crops(images)
        with self._phase("encode"):
            embeddings = self._encode(images, crops)
        with self._phase("decode+filter"):
            self._decode_all(crops, embeddings)
        with self._phase("nms+merge"):
            return [self._merge(images[i].shape[:2], [c for c in crops if c.image == i]) for i in range(len(images))]

    @contextmanager
    def _phase(self, name: str):
        if not self.profile:
            yield
            return
        if self.model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        if self.model.device.type == "cuda":
            torch.cuda.synchronize()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    # -------------------------------------------------------------- stages

    def _crops(self, images: list[np.ndarray]) -> list[_Crop]:
        crops = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            boxes, layers = crop_boxes(h, w, self.params.crop_n_layers, self.params.crop_overlap_ratio)
            for box, layer in zip(boxes, layers):
                scale = np.array([[box[2] - box[0], box[3] - box[1]]])
                crops.append(_Crop(i, (h, w), layer, box, self.grids[layer] * scale))
        return crops

    def _encode(self, images: list[np.ndarray], crops: list[_Crop]) -> torch.Tensor:
        chunks = []
        step = self.params.encode_batch
        for start in range(0, len(crops), step):
            batch = [self.model.preprocess(images[c.image][c.box[1]:c.box[3], c.box[0]:c.box[2]])
                     for c in crops[start:start + step]]
            chunks.append(self.model.encode(torch.stack(batch).pin_memory() if self.model.device.type == "cuda"
                                            else torch.stack(batch)))
        return torch.cat(chunks)

    def _decode_all(self, crops: list[_Crop], embeddings: torch.Tensor) -> None:
        device = self.model.device
        owners, coords = [], []
        for ci, crop in enumerate(crops):
            h, w = crop.hw
            nh, nw = resized_shape(h, w, self.model.prompt_size)
            scaled = crop.points * np.array([[nw / w, nh / h]])
            owners.append(np.full(len(scaled), ci))
            coords.append(scaled)
        owner = torch.as_tensor(np.concatenate(owners), device=device)
        coord = torch.as_tensor(np.concatenate(coords), dtype=torch.float32, device=device)
        point_index = torch.cat([torch.arange(len(c.points)) for c in crops]).to(device)
        for start in range(0, len(owner), self.params.decode_batch):
            sl = slice(start, start + self.params.decode_batch)
            logits, iou = self.model.decode(embeddings, owner[sl], coord[sl])
            self._filter_batch(crops, owner[sl], point_index[sl], logits, iou.float())

    def _filter_batch(self, crops: list[_Crop], owner: torch.Tensor, point_index: torch.Tensor,
                      logits: torch.Tensor, iou: torch.Tensor) -> None:
        """IoU filter on the low-res output, then full-resolution work per crop in memory-bounded chunks."""
        p = self.params
        n_masks = logits.shape[1]
        owner = owner.repeat_interleave(n_masks)
        point_index = point_index.repeat_interleave(n_masks)
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
        keep = iou > p.pred_iou_thresh if p.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
        # Only masks that pass the IoU filter are upscaled (the references upscale all of them first).
        owner, point_index, logits, iou = owner[keep], point_index[keep], logits[keep], iou[keep]
        for ci in owner.unique().tolist():
            crop = crops[ci]
            sel = (owner == ci).nonzero().squeeze(1)
            h, w = crop.hw
            step = max(1, self.pixel_budget // max(h * w, self.model.prompt_size ** 2))
            for start in range(0, len(sel), step):
                idx = sel[start:start + step]
                self._postprocess_chunk(crop, logits[idx], iou[idx], point_index[idx])

    def _postprocess_chunk(self, crop: _Crop, low_res: torch.Tensor, iou: torch.Tensor, points: torch.Tensor) -> None:
        """Stability filter, threshold, boxes, crop-edge filter for masks of one crop."""
        p = self.params
        full = self.model.upscale(low_res, crop.hw)
        stab = stability_score(full, self.model.mask_threshold, p.stability_score_offset)
        if p.stability_score_thresh > 0:
            ok = (stab >= p.stability_score_thresh).nonzero().squeeze(1)
            full, stab, iou, points = full[ok], stab[ok], iou[ok], points[ok]
        masks = full > self.model.mask_threshold
        del full
        boxes = masks_to_boxes(masks)
        h, w = crop.image_hw
        edge_ok = (~near_crop_edge(boxes, crop.box, [0, 0, w, h])).nonzero().squeeze(1)
        masks = masks[edge_ok]
        parts = {"boxes": boxes[edge_ok], "iou": iou[edge_ok], "stability": stab[edge_ok],
                 "areas": masks.sum(dim=(1, 2)), "points": points[edge_ok]}
        if self.return_masks:
            parts["masks"] = masks
        for name, value in parts.items():
            crop.kept.setdefault(name, []).append(value)

    def _merge(self, hw: tuple[int, int], crops: list[_Crop]) -> ImageMasks:
        """NMS within each crop, uncrop, then NMS across crops preferring smaller crops."""
        p = self.params
        per_crop = []
        for crop in crops:
            if not crop.kept:
                continue
            data = {k: torch.cat(v) for k, v in crop.kept.items()}
            order = batched_nms(data["boxes"].float(), data["iou"], torch.zeros_like(data["iou"]), p.box_nms_thresh)
            data = {k: v[order] for k, v in data.items()}
            x0, y0 = crop.box[0], crop.box[1]
            data["boxes"] = data["boxes"] + torch.tensor([x0, y0, x0, y0], device=data["boxes"].device)
            data["crop_boxes"] = torch.tensor([crop.box], device=data["boxes"].device).expand(len(order), 4)
            data["points_xy"] = torch.as_tensor(crop.points, device=data["boxes"].device)[data.pop("points")] + \
                torch.tensor([x0, y0], device=data["boxes"].device)
            if self.return_masks:
                data["masks"] = _uncrop_masks(data["masks"], crop.box, hw)
            per_crop.append(data)
        if not per_crop:
            return _empty(hw, self.return_masks)
        data = {k: torch.cat([d[k] for d in per_crop]) for k in per_crop[0]}
        if len(crops) > 1:
            scores = 1 / box_area(data["crop_boxes"]).float()
            order = batched_nms(data["boxes"].float(), scores, torch.zeros_like(scores), p.crop_nms_thresh)
            data = {k: v[order] for k, v in data.items()}
        boxes = data["boxes"].cpu().numpy().astype(np.float64)
        boxes[:, 2:] += 1  # inclusive last pixel -> exclusive edge
        return ImageMasks(
            boxes=boxes, areas=data["areas"].cpu().numpy().astype(np.float64),
            iou_preds=data["iou"].cpu().numpy(), stability=data["stability"].cpu().numpy(),
            points=data["points_xy"].cpu().numpy(), crop_boxes=data["crop_boxes"].cpu().numpy(),
            masks=data["masks"].cpu().numpy() if self.return_masks else None,
        )


def _uncrop_masks(masks: torch.Tensor, box: list[int], hw: tuple[int, int]) -> torch.Tensor:
    x0, y0, x1, y1 = box
    return torch.nn.functional.pad(masks, (x0, hw[1] - x1, y0, hw[0] - y1))


def _empty(hw: tuple[int, int], with_masks: bool) -> ImageMasks:
    return ImageMasks(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 2)), np.zeros((0, 4)),
                      np.zeros((0, *hw), dtype=bool) if with_masks else None)
