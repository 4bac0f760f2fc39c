"""Regions stage: mask generation fused with salient-box selection.

Fused so that masks never leave the worker: only the few selected boxes travel on.
"""

from __future__ import annotations

import json
from collections import Counter

from curate import backends
from curate.backends.types import MaskGenerator
from curate.config import OcrLayoutMasksConfig, PipelineConfig, SelectConfig
from curate.ops.images import decode_rgb
from curate.ops.select import SalientBox, select_salient_boxes
from curate.ops.text_lines import text_line_regions
from curate.rows import add_events, set_model


def pick_regions(masks, width: int, height: int, select: SelectConfig,
                 section) -> tuple[list[SalientBox], list[list] | None, str]:
    """Salient boxes for one image (``select``: the run's selection config; ``section``: the kind's
    masks section), the text lines each holds (corner points) when they are lines, and what to say
    when there is none."""
    if isinstance(section, OcrLayoutMasksConfig) and section.regions == "lines":
        picked = text_line_regions(masks.boxes, width, height, select.max_boxes, section.lines_per_region,
                                   section.min_line_px)
        lines = [[masks.quads[i].round(1).tolist() for i in members] for _, members in picked]
        return [box for box, _ in picked], lines, f"no text line detected ({len(masks)} specks)"
    select = select_config_for(select, section)
    picked = select_salient_boxes(masks.boxes, masks.areas, width, height, select)
    return picked, None, (f"no salient region: {len(masks)} masks, selection needs at least {select.min_masks} "
                          "in one window")


def select_config_for(select: SelectConfig, masks_section) -> SelectConfig:
    """Text-line "masks" are selected with their own windows, grown to whole lines."""
    if isinstance(masks_section, OcrLayoutMasksConfig):
        return select.model_copy(update={"window_fracs": masks_section.window_fracs, "expand_to_members": True})
    return select


class RegionsStage:
    name = "regions"
    kinds: tuple[str, ...] = ("natural", "document")  # rows of other kinds pass through untouched

    def __init__(self, cfg: PipelineConfig):
        # One generator per distinct backend section; documents share natural's unless set.
        self.generators: dict[str, MaskGenerator] = {}
        self.select = cfg.select
        self.sections = {}
        for kind in self.kinds:
            section = cfg.masks.for_kind(kind)
            shared = next((k for k in self.generators if cfg.masks.for_kind(k) is section), None)
            self.generators[kind] = self.generators[shared] if shared else backends.build(section)
            self.sections[kind] = section

    def process(self, rows: list[dict]) -> list[dict]:
        groups: dict[int, tuple[str, list[dict]]] = {}
        for row in rows:
            kind = "document" if row["kind"] == "document" else "natural"
            if row["status"] == "ok" and kind in self.generators:
                groups.setdefault(id(self.generators[kind]), (kind, []))[1].append(row)
        for kind, mine in groups.values():
            self._process(mine, kind)
        return rows

    def _process(self, live: list[dict], kind: str) -> None:
        generator = self.generators[kind]
        # one by one: a mask call is a few images, and decoding them on threads cost a two-core
        # machine 5% more CPU (benchmarks/RESULTS.md); the caption stage's 64-image calls use threads
        images = [decode_rgb(r["image"]) for r in live]
        for row, masks in zip(live, generator.generate(images)):
            w, h = row["width"], row["height"]
            picked, lines, none_note = pick_regions(masks, w, h, self.select, self.sections[kind])
            regions = [
                {"box": list(b.box), "box_norm": [b.box[0] / w, b.box[1] / h, b.box[2] / w, b.box[3] / h],
                 "score": b.score, "n_masks": b.n_masks, "mask_area_frac": b.mask_area_frac}
                for b in picked
            ]
            for region, quads in zip(regions, lines or []):
                region["text_lines"] = quads
            row["regions"] = json.dumps(regions)
            if not picked:
                row["regions_note"] = none_note
            set_model(row, "masks", generator.describe())
            add_events(row, self.name, Counter(masks=len(masks), boxes=len(picked),
                                               images_without_boxes=int(not picked)))


class NaturalRegionsStage(RegionsStage):
    """The GPU mask stage when documents have a stage of their own."""

    kinds = ("natural",)


class DocumentRegionsStage(RegionsStage):
    """Documents' text-line regions, in the documents stage (CPU actors)."""

    name = "documents"
    kinds = ("document",)
