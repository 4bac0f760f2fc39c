"""Regions stage: mask generation fused with salient-box selection.

Fused so that masks never leave the worker: only the few selected boxes travel on.
"""

from __future__ import annotations

import json
from collections import Counter

from curate import backends
from curate.config import PipelineConfig
from curate.images import decode_rgb
from curate.stages.rows import add_events, set_model
from curate.stages.select import select_salient_boxes


class RegionsStage:
    name = "regions"

    def __init__(self, cfg: PipelineConfig):
        self.select_cfg = cfg.select
        self.generator = backends.build("masks", cfg.masks.backend, cfg.masks)

    def process(self, rows: list[dict]) -> list[dict]:
        live = [r for r in rows if r["status"] == "ok"]
        if not live:
            return rows
        images = [decode_rgb(r["image"]) for r in live]
        for row, masks in zip(live, self.generator.generate(images)):
            picked = select_salient_boxes(masks.boxes, masks.areas, row["width"], row["height"], self.select_cfg)
            w, h = row["width"], row["height"]
            row["regions"] = json.dumps([
                {"box": list(b.box), "box_norm": [b.box[0] / w, b.box[1] / h, b.box[2] / w, b.box[3] / h],
                 "score": b.score, "n_masks": b.n_masks, "mask_area_frac": b.mask_area_frac}
                for b in picked
            ])
            if not picked:
                row["regions_note"] = (
                    f"no salient region: {len(masks)} masks, selection needs at least "
                    f"{self.select_cfg.min_masks} in one window"
                )
            set_model(row, "masks", self.generator.describe())
            add_events(row, self.name, Counter(masks=len(masks), boxes=len(picked),
                                               images_without_boxes=int(not picked)))
        return rows
