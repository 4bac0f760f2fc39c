"""BatchedMaskGenerator: automatic mask generation over a batch of images, on one device."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import nms

from curate.amg.candidates import COLUMN, TABLE_COLUMNS, CropPlacement, Filters, candidate_rows_torch
from curate.amg.graphs import GraphedDecoder, GraphedEncoder
from curate.amg.grid import crop_boxes, layer_point_grids, resized_shape
from curate.amg.mask_stats import mask_stats, resolve_backend, upscale_logits
from curate.amg.models import SamFamilyModel
from curate.amg.params import AmgParams
from curate.amg.transfer import upload


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
    layer: int
    box: list[int]
    points: np.ndarray  # (P, 2) crop frame, pixels

    @property
    def hw(self) -> tuple[int, int]:
        return self.box[3] - self.box[1], self.box[2] - self.box[0]


class BatchedMaskGenerator:
    def __init__(self, model: SamFamilyModel, params: AmgParams = AmgParams(), return_masks: bool = False,
                 pixel_budget: int = 2**28, profile: bool = False, stats_backend: str = "auto"):
        """pixel_budget: full-resolution logits held at once by the torch statistics path and when
        materialising masks (elements; 2**28 float32 = 1 GiB).
        profile: synchronise the device between phases and add their seconds to ``self.timings``.
        stats_backend: per-mask statistics by the fused ``triton`` kernel, the references' ``torch``
        arithmetic, or ``auto`` (triton where it runs)."""
        self.model = model
        self.pixel_budget = pixel_budget
        self.profile = profile
        self.stats_backend = stats_backend
        self.timings: dict[str, float] = {}
        self.params = params
        self.return_masks = return_masks
        self.grids = layer_point_grids(params.points_per_side, params.crop_n_layers,
                                       params.crop_n_points_downscale_factor)
        self._decode = _decoder(model, params)
        self._encode_batch = _encoder(model, params)

    @torch.inference_mode()
    def generate(self, images: list[np.ndarray]) -> list[ImageMasks]:
        """Masks for each uint8 RGB image (H, W, 3).

        Images go through in waves (whole images, about ``encode_batch`` crops each). The next
        wave's image encoder is queued behind this wave's decoding, before the host waits for this
        wave's survivors: the encoder's many small kernels cost the host more time to launch than
        the GPU to run, and queued behind the decoder that launch time is hidden."""
        if not images:
            return []
        with self._phase("prepare"):
            crops = self._crops(images)
        waves = self._waves(crops)
        results = []
        with self._phase("encode"):
            embeddings = self._encode(images, crops, waves[0])
        with self._phase("prepare"):  # while the device encodes the first wave
            geometry = _CropGeometry(crops, self.model.device, self.model.prompt_size)
        for k, wave in enumerate(waves):
            candidates = self._decode_all(crops, geometry, embeddings, wave)
            if k + 1 < len(waves):
                with self._phase("encode"):
                    embeddings = self._encode(images, crops, waves[k + 1])
            with self._phase("nms+merge"):
                results += self._merge(images, crops, candidates, sorted({crops[ci].image for ci in wave}))
        return results

    def _waves(self, crops: list[_Crop]) -> list[list[int]]:
        """Crop indices grouped into waves of whole images, at most ``encode_batch`` crops each
        (one image per wave when its crops alone are more)."""
        by_image: dict[int, list[int]] = {}
        for ci, crop in enumerate(crops):
            by_image.setdefault(crop.image, []).append(ci)
        waves: list[list[int]] = []
        current: list[int] = []
        for indices in by_image.values():
            if current and len(current) + len(indices) > self.params.encode_batch:
                waves.append(current)
                current = []
            current += indices
        return waves + [current]

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
                crops.append(_Crop(i, layer, box, self.grids[layer] * scale))
        return crops

    def _encode(self, images: list[np.ndarray], crops: list[_Crop], wave: list[int]) -> torch.Tensor:
        """Embeddings of the crops ``wave`` (indices into ``crops``), in that order. Crops are resized
        on the device when it is a GPU (Pillow's arithmetic, see resize.py): each image crosses to it
        once as uint8."""
        on_gpu = self.model.device.type == "cuda"
        uploaded = {}
        chunks = []
        step = self.params.encode_batch
        size = self.model.encoder_size
        for start in range(0, len(wave), step):
            chosen = [crops[ci] for ci in wave[start:start + step]]
            if on_gpu:
                batch = torch.empty((len(chosen), 3, size, size), dtype=torch.float32, device=self.model.device)
                for slot, c in zip(batch, chosen):
                    if c.image not in uploaded:
                        uploaded[c.image] = upload(images[c.image], self.model.device)
                    self.model.preprocess_tensor(uploaded[c.image][c.box[1]:c.box[3], c.box[0]:c.box[2]], out=slot)
            else:
                batch = torch.stack([self.model.preprocess(images[c.image][c.box[1]:c.box[3], c.box[0]:c.box[2]])
                                     for c in chosen])
            chunks.append(self._encode_batch(batch))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def _decode_all(self, crops: list[_Crop], geometry: _CropGeometry, embeddings: torch.Tensor,
                    wave: list[int]) -> dict[str, torch.Tensor]:
        """Decode every prompt of the crops ``wave`` (``embeddings`` in that order), one crop per
        decoder call (all its prompts share the crop's image side), in equal chunks of at most
        ``decode_batch``: the candidate table (a row per mask, see ``TABLE_COLUMNS``) with ``ok``,
        whether the mask passed the filters (and ``low_res`` when masks are returned). Nothing here
        waits for the device (unless masks are returned), so the host queues the next decoder call
        while the device runs the last."""
        ctx = self.model.decoder_context(embeddings)
        parts: list[dict[str, torch.Tensor]] = []
        for position, ci in enumerate(wave):
            n_points = len(crops[ci].points)
            crop_ctx = ctx.crop(position)
            # equal chunks: one decoder shape per crop size of prompts (one compilation)
            step = -(-n_points // -(-n_points // self.params.decode_batch))
            for start in range(0, n_points, step):
                stop = min(start + step, n_points)
                with self._phase("decode"):
                    logits, iou = self._decode(crop_ctx, geometry.prompt_coords[ci, start:stop])
                with self._phase("filter"):
                    parts.append(self._filter_batch(ci, crops[ci].hw, geometry, start, logits, iou.float()))
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

    def _filter_batch(self, crop_index: int, hw: tuple[int, int], geometry: _CropGeometry, first_point: int,
                      logits: torch.Tensor, iou: torch.Tensor) -> dict[str, torch.Tensor]:
        """The IoU filter, then the full-resolution statistics (stability, area, box) of the masks
        that pass it, and the crop-edge filter: the masks' rows of the candidate table
        (candidates.py) and ``ok``, whether each survives. On CUDA the statistics kernel's
        accumulators go straight to the candidate kernel (two launches per batch)."""
        p = self.params
        n_prompts, n_masks = logits.shape[:2]
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
        # only masks that pass the IoU filter are looked at in full (the references upscale all)
        keep = iou > p.pred_iou_thresh if p.pred_iou_thresh > 0 else None
        points = geometry.points[crop_index, first_point:first_point + n_prompts]
        placement, filters = geometry.placements[crop_index], Filters(p.pred_iou_thresh, p.stability_score_thresh)
        statistics = (self.model.prompt_size, self.model.mask_threshold, p.stability_score_offset)
        if resolve_backend(self.stats_backend, logits.device) == "triton":
            from curate.amg import triton_stats
            from curate.amg.triton_candidates import candidate_rows_triton

            acc = triton_stats.empty_stats(len(logits), logits.device)
            triton_stats.stats_one_size(logits, hw, *statistics, acc, keep=keep)
            table, ok = candidate_rows_triton(acc, iou, points, n_masks, placement, filters)
        else:
            stats = mask_stats(logits, hw, *statistics, "torch", self.pixel_budget, keep=keep)
            table, ok = candidate_rows_torch(stats, iou, points, n_masks, placement, filters)
        if self.return_masks:  # low-res logits of survivors only (waits for the device)
            chosen = ok.nonzero().squeeze(1)
            return {"table": table[chosen], "ok": ok[chosen], "low_res": logits[chosen]}
        return {"table": table, "ok": ok}

    def _merge(self, images: list[np.ndarray], crops: list[_Crop], candidates: dict[str, torch.Tensor],
               image_ids: list[int]) -> list[ImageMasks]:
        """For the images ``image_ids`` (whose crops' masks ``candidates`` holds): NMS within each
        crop, then NMS across the crops of each image preferring smaller crops, each pass one
        torchvision NMS call over all groups (boxes offset per group, as batched_nms does); masks,
        when asked, are materialised for survivors only. The host waits for the device four times:
        for the survivors, in each NMS, and for the survivors' rows, which cross to it once."""
        p = self.params
        survivors = candidates["ok"].nonzero().squeeze(1)  # waits for the device
        if len(survivors) == 0:
            return [_empty(images[i].shape[:2], self.return_masks) for i in image_ids]
        rows = candidates["table"].index_select(0, survivors)
        order = nms(rows[:, COLUMN["nms_box"]].float(), rows[:, COLUMN["iou"]].float(), p.box_nms_thresh)
        # the references concatenate crops in order, each crop's survivors by decreasing IoU
        order = order[torch.sort(rows[order, COLUMN["crop"]], stable=True).indices]
        rows = rows[order]
        # every image has the same crops (1 + 4 + 16 ... per layer): all of them or none have several
        if p.crop_n_layers > 0:
            # NMS survivors come by decreasing score, each image's in the order of a call of its
            # own (a stable sort); regrouped by image
            keep = nms(rows[:, COLUMN["nms_image_box"]].float(), rows[:, COLUMN["crop_score"]].float(),
                       p.crop_nms_thresh)
            keep = keep[torch.sort(rows[keep, COLUMN["image"]], stable=True).indices]
            rows, order = rows[keep], order[keep]
        host = rows.cpu().numpy()
        low_res = candidates["low_res"][survivors[order]] if self.return_masks else None
        results = []
        for i in image_ids:
            mine = np.flatnonzero(host[:, COLUMN["image"]] == i)
            if len(mine) == 0:
                results.append(_empty(images[i].shape[:2], self.return_masks))
                continue
            results.append(self._image_masks(images[i].shape[:2], crops, host[mine],
                                             None if low_res is None else low_res[torch.from_numpy(mine)]))
        return results

    def _image_masks(self, hw: tuple[int, int], crops: list[_Crop], rows: np.ndarray,
                     low_res: torch.Tensor | None) -> ImageMasks:
        """One image's survivors, from their rows of the candidate table (on the host) and, when
        masks are asked for, their low-res logits."""
        column = {name: rows[:, COLUMN[name]] for name in TABLE_COLUMNS}
        boxes = column["image_box"].copy()
        boxes[:, 2:] += 1  # inclusive last pixel -> exclusive edge
        masks = None
        if self.return_masks:
            masks = np.zeros((len(boxes), *hw), dtype=bool)
            for j, ci in enumerate(column["crop"].astype(np.int64)):
                x0, y0, x1, y1 = crops[ci].box
                full = upscale_logits(low_res[j][None], crops[ci].hw, self.model.prompt_size)[0]
                masks[j, y0:y1, x0:x1] = (full > self.model.mask_threshold).cpu().numpy()
        return ImageMasks(
            boxes=boxes, areas=column["area"].copy(), iou_preds=column["iou"].astype(np.float32),
            stability=column["stability"].astype(np.float32), points=column["point_xy"].copy(),
            crop_boxes=column["crop_box"].astype(np.int64), masks=masks,
        )


def _graphs(model: SamFamilyModel, params: AmgParams) -> bool:
    return params.cuda_graphs and model.device.type == "cuda"


def _decoder(model: SamFamilyModel, params: AmgParams):
    """model.decode as the generator calls it: compiled, replayed as CUDA graphs, or eager."""
    if params.compile_decoder:
        return torch.compile(model.decode)
    if _graphs(model, params):
        return GraphedDecoder(model.decode)
    return model.decode


def _encoder(model: SamFamilyModel, params: AmgParams):
    """model.encode as the generator calls it: replayed as CUDA graphs where the encoder can be
    captured, else eager."""
    if _graphs(model, params) and model.graphable_encoder:
        return GraphedEncoder(model.encode)
    return model.encode


class _CropGeometry:
    """Per-crop geometry indexed by crop number: where its masks go (``placements``, on the host)
    and its prompt points (padded; in the crop's pixels and in the prompt frame, on the device).
    The points cross to the device as one array (one pinned copy and one transfer, before the
    first kernel of a batch)."""

    def __init__(self, crops: list[_Crop], device: torch.device, prompt_size: int):
        full = {c.image: c.box for c in crops if c.layer == 0}
        # NMS group offsets: above every coordinate of a box in its crop or image
        unit = 1 + max(max(box[2:]) for box in full.values())
        self.placements = [CropPlacement(i, tuple(c.box), c.image, tuple(full[c.image]), unit)
                           for i, c in enumerate(crops)]
        longest = max(len(c.points) for c in crops)
        points = np.zeros((len(crops), longest, 2))
        prompt_coords = np.zeros((len(crops), longest, 2))
        for i, c in enumerate(crops):
            h, w = c.hw
            nh, nw = resized_shape(h, w, prompt_size)
            points[i, :len(c.points)] = c.points
            prompt_coords[i, :len(c.points)] = c.points * np.array([[nw / w, nh / h]])
        packed = upload(np.stack([points, prompt_coords]), device)
        self.points = packed[0]
        self.prompt_coords = packed[1].float()  # the points in the prompt frame


def _empty(hw: tuple[int, int], with_masks: bool) -> ImageMasks:
    return ImageMasks(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 2)), np.zeros((0, 4)),
                      np.zeros((0, *hw), dtype=bool) if with_masks else None)
