"""`curate export llava`: fine-tuning data in LLaVA's conversation format (what LLaVA-UHD-style trainers read).

DEST/llava.json   [{"id", "image": "images/KEY.EXT", "conversations": [{"from": "human", ...}, {"from": "gpt", ...}],
                    "box": [x0, y0, x1, y1], "width", "height", "source"}, ...]
DEST/images/      each image once, its bytes copied as stored in the corpus

From a corpus's question shards: the human turn is ``<image>\\n`` + the retargeted question, the gpt
turn is the region's caption. With ``box_in="answer"`` (the default) the answer ends with the region
in Qwen-VL's grounding notation, ``<box>(x0,y0),(x1,y1)</box>`` with coordinates scaled to 0-1000 of
the image's width and height; ``"question"`` puts it after the question instead, ``"none"`` leaves it
out of the text. Every entry also carries ``box`` in absolute pixels (x1/y1 exclusive).
From a canvas output: the inherited conversations as they are, the pasted box as ``box``.

Resumable: images already written are kept (each is written whole or not at all); the JSON is written last.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from curate.export.common import plan_export
from curate.io.layout import atomic_write_bytes
from curate.io.lock import lock_for
from curate.io.objpath import OutputPath
from curate.io.reader import image_index, read_image, shard_samples

BoxIn = Literal["answer", "question", "none"]


@dataclass
class LlavaExportResult:
    dest: OutputPath
    counts: Counter = field(default_factory=Counter)


def grounding(box: list[int], width: int, height: int) -> str:
    """Qwen-VL's box notation: corners scaled to 0-1000 of the image's sides."""
    x0, y0, x1, y1 = box
    sx, sy = 1000 / width, 1000 / height
    return f"<box>({round(x0 * sx)},{round(y0 * sy)}),({round(x1 * sx)},{round(y1 * sy)})</box>"


def question_entry(record: dict, image_name: str, box_in: BoxIn) -> dict:
    question, answer = record["question"], record["caption"]
    where = grounding(record["box"], record["width"], record["height"])
    if box_in == "question":
        question = f"{question} {where}"
    elif box_in == "answer":
        answer = f"{answer} {where}"
    return {"id": record["key"], "image": image_name,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
            "box": list(record["box"]), "width": record["width"], "height": record["height"],
            "source": "question"}


def canvas_entry(record: dict, image_name: str) -> dict:
    return {"id": record["key"], "image": image_name, "conversations": record["conversations"],
            "box": list(record["box"]), "width": record["width"], "height": record["height"], "source": "canvas"}


def why_no_questions(manifest: dict) -> str:
    """Why a finished corpus has no question shard, from its manifest's retarget stage."""
    stage = manifest.get("stages", {}).get("retarget")
    if not stage or stage.get("skipped"):
        return "a corpus needs retarget.backend set to have questions"
    counts = stage.get("counts", {})
    if not counts.get("prompts"):
        return "no captioned region reached the retarget stage"
    dropped = sorted(((k.removeprefix("dropped."), n) for k, n in counts.items() if k.startswith("dropped.")),
                     key=lambda kv: -kv[1])
    reasons = ", ".join(f"{reason} {n}" for reason, n in dropped)
    return (f"the retarget stage dropped every question it wrote: {counts['prompts']} prompts, {reasons}; "
            "each region's question_skipped says why (curate inspect)")


def export_llava(source: str | OutputPath, dest: str | OutputPath, box_in: BoxIn = "answer",
                 on_progress: Callable[[int, int], None] | None = None) -> LlavaExportResult:
    plan = plan_export(source, dest, "llava-export", lambda _: box_in)
    src, out = plan.src, plan.out
    canvas = plan.manifest.get("kind") == "canvas"
    shards = src.shard_files() if canvas else src.question_shard_files()
    if not shards:
        raise FileNotFoundError(f"{source}: no {'canvas' if canvas else 'question'} shards to export "
                                f"({'the canvas run wrote none' if canvas else why_no_questions(plan.manifest)})")
    result = LlavaExportResult(out.root)
    entries = []
    index = None if canvas else image_index(src)
    with lock_for(out.lock):
        (out.root / "images").mkdir(parents=True, exist_ok=True)
        for number, shard in enumerate(shards, start=1):
            for key, members in shard_samples(shard):
                record = json.loads(members["json"])
                ext = record["image_ext"]
                image_key = key if canvas else record["image_key"]
                name = f"images/{image_key}.{ext}"
                target = out.root / name
                if not target.exists():
                    data = members.get(ext) or read_image(src, index, image_key)
                    atomic_write_bytes(target, data)
                    result.counts["images"] += 1
                entries.append(canvas_entry(record, name) if canvas else question_entry(record, name, box_in))
                result.counts["entries"] += 1
            if on_progress:
                on_progress(number, len(shards))
    atomic_write_bytes(out.root / "llava.json", json.dumps(entries, ensure_ascii=False, indent=1).encode())
    return result
