"""`curate export ps3`: a corpus in the two-set WebDataset format of PS3's own pre-training loader.

NVlabs/PS3 (``train/src/open_clip_train/data.py``, dataset type ``webdataset_separate_image_text_box``)
reads two tar sets in lock-step and asserts that their keys match sample by sample:

  DEST/images/train-NNNNNN.tar     KEY.jpg|png|webp   the stored image bytes, copied as they are
  DEST/text_box/train-NNNNNN.tar   KEY.json           {"text": [caption, ...], "box": [[x0, y0, x1, y1], ...],
                                                       "global_text": "..."}  (boxes in absolute pixels)

Both sets have the same shard names, the same samples in the same order. ``text`` and ``box`` are
pairwise and hold only captioned regions (a null caption breaks PS3's caption cleaning, an empty
list its sentence merging); ``global_text`` is there when the record has a global caption (then
``text``/``box`` may be absent, which PS3 reads only with ``--use_global_caption``). Images with no
caption of any kind are left out of both sets and counted.

Each corpus shard becomes one pair of export shards, numbered 0..n-1 in the corpus's order, so the
shard lists form one brace pattern. A pair is committed by its marker in ``.curate/exported/``
(written after both tars are renamed into place): a killed export resumes at the first uncommitted
pair. A corpus's question shards export the same way (``what="questions"``: each question is the
text of its region, the image read from the region shard), and so does a canvas output (the pasted
box, with the inherited question and answer as its text). PS3's format has no place for a
conversation of several turns: only the first question and its answer are kept (``curate export
llava`` keeps them all).
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from curate.export.common import plan_export
from curate.io.layout import OutputLayout, atomic_write_bytes, tmp_path
from curate.io.lock import lock_for
from curate.io.objpath import OutputPath
from curate.io.ownership import OutputRefused
from curate.io.reader import image_index, read_image, shard_samples
from curate.io.shards import ShardWriter


@dataclass
class Ps3ExportResult:
    dest: OutputPath
    shards: int = 0
    counts: Counter = field(default_factory=Counter)  # samples, regions, global_text, skipped_*, ...

    def flags(self) -> list[str]:
        """The arguments of PS3's ``open_clip_train.main`` that read this export."""
        last = f"{self.shards - 1:06d}"
        flags = [
            "--dataset-type", "webdataset_separate_image_text_box",
            "--train-data-image", f"{self.dest / 'images'}/train-{{000000..{last}}}.tar",
            "--train-data-text-box", f"{self.dest / 'text_box'}/train-{{000000..{last}}}.tar",
            "--train-num-samples", str(self.counts["samples"]),
        ]
        if self.counts["global_only"]:
            flags += ["--use_global_caption"]  # samples without text/box need it (else KeyError 'text')
        elif self.counts["global_text"]:
            flags += ["--use_global_caption", "--global_caption_prob", "0.25"]
        return flags

    def summary(self) -> dict:
        return {"dest": str(self.dest), "shards": self.shards, "counts": dict(self.counts),
                "ps3_flags": self.flags()}


def ps3_sample(record: dict) -> dict | None:
    """The text-box JSON of one ImageRecord, or None when it has no caption of any kind."""
    regions = [r for r in record.get("regions", []) if isinstance(r.get("caption"), str) and r["caption"].strip()]
    sample: dict = {}
    if regions:
        sample["text"] = [r["caption"] for r in regions]
        sample["box"] = [[int(v) for v in r["box"]] for r in regions]
    if isinstance(record.get("global_caption"), str) and record["global_caption"].strip():
        sample["global_text"] = record["global_caption"]
    return sample or None


def decodes(data: bytes) -> bool:
    """Whether PIL decodes the image whole, as PS3's ``wds.decode("pilrgb")`` will."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:
        return False


class _Variant:
    """How one kind of curate shard becomes PS3 samples: (image ext, image bytes, text-box dict)."""

    def __init__(self, src: OutputLayout, what: str):
        self.what = what
        self.index = image_index(src) if what == "questions" else None
        self.src = src

    def sample(self, members: dict[str, bytes]) -> tuple[str, bytes, dict | None]:
        record = json.loads(members["json"])
        ext = record["image_ext"]
        if self.what == "regions":
            return ext, members.get(ext), ps3_sample(record)
        if self.what == "questions":  # the question is the region's text; the image lives in the region shard
            image = read_image(self.src, self.index, record["image_key"])
            return ext, image, {"text": [record["question"]], "box": [list(record["box"])]}
        turns = record["conversations"]  # canvas: the inherited QA describes the pasted region
        text = strip_image_tag(turns[0]["value"]) + (" " + turns[1]["value"] if len(turns) > 1 else "")
        return ext, members.get(ext), {"text": [text], "box": [list(record["box"])]}


def strip_image_tag(text: str) -> str:
    return re.sub(r"<image>\s*", "", text).strip()


def export_ps3(source: str | OutputPath, dest: str | OutputPath, what: str = "regions",
               on_progress: Callable[[int, int], None] | None = None) -> Ps3ExportResult:
    """Export (or resume exporting) ``source`` into ``dest``. ``what``: a corpus's ``regions`` (local
    captions) or ``questions`` (each question as the text of its region); a canvas output is detected
    and exported as its pasted boxes with their QA."""
    if what not in ("regions", "questions"):
        raise ValueError(f"what={what!r}: regions or questions")
    plan = plan_export(source, dest, "ps3-export", lambda m: "canvas" if m.get("kind") == "canvas" else what)
    src, out = plan.src, plan.out
    if plan.manifest.get("kind") == "canvas":
        what = "canvas"
    done_dir = out.meta_dir / "exported"
    shards = src.question_shard_files() if what == "questions" else src.shard_files()
    variant = _Variant(src, what)
    result = Ps3ExportResult(out.root.resolve() if isinstance(out.root, Path) else out.root, shards=len(shards))
    with lock_for(out.lock):
        for folder in (out.root / "images", out.root / "text_box", done_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for number, shard in enumerate(shards):
            name = f"train-{number:06d}"
            marker = done_dir / f"{name}.json"
            if marker.exists():
                done = json.loads(marker.read_text())
                if done.get("source") != shard.name:
                    raise OutputRefused(f"{dest}: shard {name} was exported from {done.get('source')}, not "
                                        f"{shard.name}: the corpus changed; export into a new directory")
                result.counts.update(done["counts"])
            else:
                result.counts.update(_export_pair(shard, variant, out.root, name, marker))
            if on_progress:
                on_progress(number + 1, len(shards))
    atomic_write_bytes(out.root / "summary.json", json.dumps(result.summary(), indent=2).encode())
    return result


def _export_pair(shard: OutputPath, variant: _Variant, root: OutputPath, name: str, marker: OutputPath) -> Counter:
    counts: Counter = Counter()
    paths = [root / "images" / f"{name}.tar", root / "text_box" / f"{name}.tar"]
    for path in paths:  # a killed export's leftovers of this pair (only our own names)
        path.unlink(missing_ok=True)
        tmp_path(path).unlink(missing_ok=True)
    images, text_box = ShardWriter(paths[0]), ShardWriter(paths[1])
    try:
        for key, members in shard_samples(shard):
            ext, image, sample = variant.sample(members)
            if sample is None:
                counts["skipped_no_caption"] += 1
                continue
            if image is None or not decodes(image):  # PS3 would drop it from the image stream only
                counts["skipped_undecodable"] += 1
                continue
            images.add(key, {ext: image})
            text_box.add(key, {"json": json.dumps(sample, ensure_ascii=False).encode()})
            counts["samples"] += 1
            counts["regions"] += len(sample.get("text", []))
            counts["global_text"] += "global_text" in sample
            counts["global_only"] += "text" not in sample
        images.close()
        text_box.close()
    except BaseException:
        images.abort()
        text_box.abort()
        raise
    atomic_write_bytes(marker, json.dumps({"source": shard.name, "counts": dict(counts)}).encode())
    return counts
