"""Regions stage: mask generation fused with salient-box selection.

Fused so that masks never leave the worker: only the few selected boxes travel on.
"""

from __future__ import annotations

import json
from collections import Counter

from curate import backends
from curate.config import PipelineConfig
from curate.ops.images import decode_rgb
from curate.rows import add_events, set_model
from curate.ops.select import select_salient_boxes


class RegionsStage:
    name = "regions"

    def __init__(self, cfg: PipelineConfig):
        self.select_cfg = cfg.select
        self.generator = backends.build(cfg.masks)
        self.layout = None
        if cfg.select.document_regions == "ocr_layout":
            from curate.backends.layout_ocr import OcrLayoutRegions

            self.layout = OcrLayoutRegions(cfg.select.layout_max_side)
        self.layout_select_cfg = cfg.select.model_copy(
            update={"window_fracs": cfg.select.layout_window_fracs, "expand_to_members": True})

    def generator_for(self, row: dict):
        return self.layout if self.layout is not None and row["kind"] == "document" else self.generator

    def process(self, rows: list[dict]) -> list[dict]:
        groups: dict[int, tuple[object, list[dict]]] = {}
        for row in rows:
            if row["status"] == "ok":
                generator = self.generator_for(row)
                groups.setdefault(id(generator), (generator, []))[1].append(row)
        for generator, mine in groups.values():
            self._process(mine, generator)
        return rows

    def _process(self, live: list[dict], generator) -> None:
        images = [decode_rgb(r["image"]) for r in live]
        for row, masks in zip(live, generator.generate(images)):
            select_cfg = self.layout_select_cfg if generator is self.layout else self.select_cfg
            picked = select_salient_boxes(masks.boxes, masks.areas, row["width"], row["height"], select_cfg)
            w, h = row["width"], row["height"]
            row["regions"] = json.dumps([
                {"box": list(b.box), "box_norm": [b.box[0] / w, b.box[1] / h, b.box[2] / w, b.box[3] / h],
                 "score": b.score, "n_masks": b.n_masks, "mask_area_frac": b.mask_area_frac}
                for b in picked
            ])
            if not picked:
                row["regions_note"] = (
                    f"no salient region: {len(masks)} masks, selection needs at least "
                    f"{select_cfg.min_masks} in one window"
                )
            set_model(row, "masks", generator.describe())
            add_events(row, self.name, Counter(masks=len(masks), boxes=len(picked),
                                               images_without_boxes=int(not picked)))
