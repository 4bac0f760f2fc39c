"""Caption stage: each region of a natural image gets an MLLM caption, of a document its OCR text.

A kind whose captioner is ``none`` (or unavailable offline) leaves captions empty and says why in
``caption_skipped``: no text is ever invented.
"""

from __future__ import annotations

import json
from collections import Counter

from curate import backends
from curate.config import NoCaptionConfig, PipelineConfig
from curate.images import decode_rgb
from curate.stages.rows import add_events, set_model


class CaptionStage:
    name = "caption"

    def __init__(self, cfg: PipelineConfig):
        self.captioners = {}
        self.skip_reasons = {}
        for kind, kind_cfg in (("natural", cfg.caption.natural), ("document", cfg.caption.document)):
            if isinstance(kind_cfg, NoCaptionConfig):
                self.skip_reasons[kind] = kind_cfg.reason
            else:
                self.captioners[kind] = backends.build("caption", kind_cfg.backend, kind_cfg)

    def process(self, rows: list[dict]) -> list[dict]:
        for row in rows:
            if row["status"] != "ok":
                continue
            regions = json.loads(row["regions"])
            if not regions:
                continue
            kind = row["kind"]
            outcomes = Counter()
            captioner = self.captioners.get(kind)
            if captioner is None:
                for region in regions:
                    region["caption_skipped"] = f"{kind} captioning skipped: {self.skip_reasons[kind]}"
                outcomes["skipped"] += len(regions)
            else:
                image = decode_rgb(row["image"])
                results = captioner.caption(image, [tuple(r["box"]) for r in regions])
                for region, result in zip(regions, results):
                    if result.text:
                        region.update(caption=result.text, caption_source=captioner.source,
                                      caption_model=captioner.describe())
                        outcomes["captioned"] += 1
                    else:
                        region["caption_skipped"] = result.dropped
                        outcomes[f"dropped.{result.reason}"] += 1
                set_model(row, f"caption.{kind}", captioner.describe())
            row["regions"] = json.dumps(regions)
            add_events(row, self.name, outcomes)
        return rows
