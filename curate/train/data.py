"""WebDataset loader over curate shards -> training samples for curate.train.

Every shard kind becomes the same sample: a low-res global view, a high-res view, region boxes with
their texts, and ground-truth score maps at the low-res patch grid (top-down per region, bottom-up
over all of the image's boxes).
- region shards (``shards/``): text = the region's local caption (regions without one give no text,
  but their boxes still count for bottom-up selection);
- question shards (``questions/``): text = the retargeted question; the image is read from the region
  shard it names, by offset from the corpus's ``index.parquet``;
- canvas shards: text = the first question and its answer; the box is where the image was pasted.
Splitting over DDP ranks and DataLoader workers is webdataset's (split_by_node, split_by_worker).
"""

from __future__ import annotations

import glob
import io
import json
import random
import re
import sys
import tarfile
from functools import lru_cache, partial

import numpy as np
import torch
from PIL import Image

from curate.io.fs import local_path, scheme_of
from curate.io.layout import OutputLayout
from curate.io.objpath import ObjectPath, glob_objects, open_sequential, output_path
from curate.io.reader import image_index, read_image
from curate.train.score_maps import box_score_map, union_score_map

IMAGE_EXTS = ("jpg", "png", "webp")
MEAN, STD = 0.5, 0.5  # SigLIP's normalisation


def expand_shards(patterns: list[str], key: str = "data.shards") -> list[str]:
    """Globs are expanded (sorted), local ones and object-storage ones (``s3://b/out/shards/*.tar``);
    brace patterns and other URLs (``pipe:``, ``https://``) are left to webdataset. ``key``: the
    config key that named them, for the error when one matches nothing."""
    urls = []
    for pattern in patterns:
        scheme = scheme_of(pattern)
        if "{" in pattern or pattern.startswith("pipe:") or scheme not in (None, "file", *OBJECT_SCHEMES):
            urls.append(pattern)
            continue
        found = glob_objects(pattern) if scheme in OBJECT_SCHEMES else sorted(glob.glob(local_path(pattern)))
        if not found:
            raise FileNotFoundError(f"{key}: nothing matches {pattern}")
        urls.extend(found)
    return urls


def to_tensor(image: Image.Image, side: int) -> torch.Tensor:
    arr = np.asarray(image.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return (torch.from_numpy(arr).permute(2, 0, 1) - MEAN) / STD


OBJECT_SCHEMES = ("s3", "gs", "gcs")


def _open_object(url: str, mode: str = "rb", bufsize: int = 8192, **_):
    if mode != "rb":
        raise ValueError(f"{url}: curate's loader only reads object storage")
    return ObjectPath(url).open_stream()


def read_object_urls_with_pyarrow() -> None:
    """Let webdataset open ``s3://`` and ``gs://`` shard URLs through pyarrow.fs, with the endpoint
    and credentials curate uses everywhere (webdataset alone would call the gsutil tool, or fail)."""
    import webdataset.gopen  # noqa: F401  (the module, not the function webdataset exports)

    schemes = sys.modules["webdataset.gopen"].gopen_schemes
    for scheme in OBJECT_SCHEMES:
        schemes[scheme] = _open_object


@lru_cache(maxsize=4096)
def _layout_of(shard_url: str) -> OutputLayout:
    return OutputLayout.of_shard(output_path(shard_url))


@lru_cache(maxsize=4)
def _index_of(layout: OutputLayout) -> dict[str, tuple[str, int, int]]:
    return image_index(layout)


def question_image(url: str, record: dict) -> bytes:
    """A question sample's image, read by offset from the region shard of the same output."""
    layout = _layout_of(url)
    return read_image(layout, _index_of(layout), record["image_key"])


def strip_image_tag(text: str) -> str:
    return re.sub(r"<image>\s*", "", text).strip()


def regions_of(sample: dict) -> tuple[bytes, list[tuple[tuple[float, ...], str | None]], str | None]:
    """(image bytes, [(box_norm, text or None)], global text) for any curate shard sample."""
    record = json.loads(sample["json"])
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    if sample.get("__ps3__"):  # PS3's text-box JSON: boxes in absolute pixels of the image
        width, height = Image.open(io.BytesIO(image)).size
        boxes = [(x0 / width, y0 / height, x1 / width, y1 / height) for x0, y0, x1, y1 in record.get("box", [])]
        return image, list(zip(boxes, record.get("text", []), strict=True)), record.get("global_text")
    if "regions" in record:  # region shard
        regions = [(tuple(r["box_norm"]), r.get("caption")) for r in record["regions"]]
        return image, regions, record.get("global_caption")
    if "question" in record:  # question shard
        image = image or question_image(sample["__url__"], record)
        return image, [(tuple(record["box_norm"]), record["question"])], None
    if "conversations" in record:  # canvas shard
        turns = record["conversations"]
        text = strip_image_tag(turns[0]["value"]) + (" " + turns[1]["value"] if len(turns) > 1 else "")
        return image, [(tuple(record["box_norm"]), text)], None
    raise ValueError(f"{sample.get('__key__')}: not a curate sample")


def native_view(image: Image.Image, long_side: int) -> torch.Tensor:
    """uint8 (3, H, W) of the image with its aspect ratio kept, the long side at most ``long_side``
    (the model resizes it to each scale's patch grid; uint8 keeps loader memory and transfers small)."""
    scale = long_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def sample_rng(key: str, epoch_seed: int) -> random.Random:
    """Draws that depend on the sample and the epoch only, so a resumed run repeats them."""
    return random.Random(f"{epoch_seed}:{key}")


def draw_texts(regions, global_text: str | None, max_regions: int, global_prob: float,
               rng: random.Random) -> tuple[list, bool]:
    """([(box_norm, text)], is_global) for one step: the global caption (with ``global_prob``, when
    there is one), else up to ``max_regions`` captioned regions drawn at random, kept in their order."""
    if global_text and rng.random() < global_prob:
        return [((0.0, 0.0, 1.0, 1.0), global_text)], True
    texted = [(box, text) for box, text in regions if text]
    if len(texted) > max_regions:
        texted = [texted[i] for i in sorted(rng.sample(range(len(texted)), max_regions))]
    return texted, False


def make_sample(sample: dict, low_res: int, hi_res: int, grid: int, max_regions: int, global_prob: float = 0.0,
                epoch_seed: int = 0) -> dict | None:
    """Decode one shard sample into tensors; None when it has neither a captioned region nor a global
    caption drawn this step."""
    data, regions, global_text = regions_of(sample)
    texted, is_global = draw_texts(regions, global_text, max_regions, global_prob,
                                   sample_rng(sample["__key__"], epoch_seed))
    if data is None or not texted:
        return None
    image = Image.open(io.BytesIO(data)).convert("RGB")
    all_boxes = [box for box, _ in regions]
    top_down = (np.zeros((1, grid, grid)) if is_global else np.stack([box_score_map(b, grid, grid) for b, _ in texted]))
    return {
        "key": sample["__key__"],
        "global": to_tensor(image, low_res),
        "hires": native_view(image, hi_res),
        "boxes": torch.tensor([box for box, _ in texted], dtype=torch.float32),
        "texts": [text for _, text in texted],
        "is_global": torch.full((len(texted),), is_global),
        "top_down": torch.tensor(top_down, dtype=torch.float32),
        "bottom_up": torch.tensor(union_score_map(all_boxes, grid, grid), dtype=torch.float32),
    }


def collate(samples: list[dict]) -> dict:
    """Stack the square views; keep the native-aspect views as a list; flatten regions with the index
    of the image each belongs to."""
    return {
        "keys": [s["key"] for s in samples],
        "global": torch.stack([s["global"] for s in samples]),
        "hires": [s["hires"] for s in samples],
        "boxes": torch.cat([s["boxes"] for s in samples]),
        "texts": [t for s in samples for t in s["texts"]],
        "is_global": torch.cat([s["is_global"] for s in samples]),
        "region_image": torch.cat([torch.full((len(s["texts"]),), i, dtype=torch.long) for i, s in enumerate(samples)]),
        "top_down": torch.cat([s["top_down"] for s in samples]),
        "bottom_up": torch.stack([s["bottom_up"] for s in samples]),
    }


PS3_PAIR = "\t"  # an image tar and its text-box tar travel as one shard "URL"


def ps3_pair_samples(source):
    """webdataset stage: each (image tar, text-box tar) pair -> samples, read in lock-step with PS3's
    own key check (its loader asserts the two streams' keys match sample by sample)."""
    for item in source:
        image_tar, box_tar = item["url"].split(PS3_PAIR)
        with (open_sequential(output_path(image_tar)) as fa, open_sequential(output_path(box_tar)) as fb,
              tarfile.open(fileobj=fa, mode="r|") as a, tarfile.open(fileobj=fb, mode="r|") as b):
            for im, bx in zip((m for m in a if m.isfile()), (m for m in b if m.isfile()), strict=True):
                key, _, ext = im.name.partition(".")
                if bx.name.partition(".")[0] != key:
                    raise ValueError(f"{image_tar} / {box_tar}: keys differ ({im.name} vs {bx.name})")
                yield {"__key__": key, "__url__": image_tar, "__ps3__": True, ext: a.extractfile(im).read(),
                       "json": b.extractfile(bx).read()}


def sample_for(cfg, grid: int, epoch_seed: int, sample: dict) -> dict | None:
    m, data = cfg.model, cfg.data
    long_side = round(m.hi_res * max(m.hi_scales))
    return make_sample(sample, m.low_res, long_side, grid, data.max_regions, data.global_caption_prob, epoch_seed)


def _ps3_dataset(cfg, grid: int, epoch_seed: int):
    """The same batches from PS3's two-set format: pairs of tars read in lock-step."""
    import webdataset as wds

    data = cfg.data
    images, boxes = expand_shards(data.shards), expand_shards(data.ps3_text_box, "data.ps3_text_box")
    if len(images) != len(boxes):
        raise FileNotFoundError(f"data.shards has {len(images)} image tars, data.ps3_text_box {len(boxes)}: "
                                "PS3's two sets must pair up shard by shard")
    pairs = [f"{i}{PS3_PAIR}{b}" for i, b in zip(images, boxes, strict=True)]
    if data.resampled:
        stages = [wds.ResampledShards(pairs, seed=epoch_seed)]
    else:
        stages = [wds.SimpleShardList(pairs, seed=epoch_seed if data.shard_shuffle else None)]
    stages += [wds.split_by_node, wds.split_by_worker, ps3_pair_samples]
    if data.shuffle_buffer:
        stages.append(wds.shuffle(data.shuffle_buffer, seed=epoch_seed))
    stages += [wds.map(partial(sample_for, cfg, grid, epoch_seed)),
               wds.select(lambda s: s is not None),
               wds.batched(cfg.optim.batch_size, collation_fn=collate, partial=False)]
    return wds.DataPipeline(*stages)


def make_dataset(cfg, grid: int, epoch_seed: int):
    """An iterable of collated batches (webdataset pipeline), split over DDP ranks and workers."""
    import webdataset as wds

    read_object_urls_with_pyarrow()
    data = cfg.data
    if data.ps3_text_box:
        return _ps3_dataset(cfg, grid, epoch_seed)
    dataset = wds.WebDataset(
        expand_shards(data.shards), resampled=data.resampled,
        shardshuffle=data.shard_shuffle if not data.resampled else False,
        nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker, empty_check=False,
        seed=epoch_seed, handler=wds.warn_and_continue)
    if data.shuffle_buffer:
        dataset = dataset.shuffle(data.shuffle_buffer, seed=epoch_seed)
    dataset = dataset.map(partial(sample_for, cfg, grid, epoch_seed))
    dataset = dataset.select(lambda s: s is not None)
    return dataset.batched(cfg.optim.batch_size, collation_fn=collate, partial=False)


def make_loader(cfg, grid: int, epoch_seed: int):
    import webdataset as wds

    dataset = make_dataset(cfg, grid, epoch_seed)
    return wds.WebLoader(dataset, batch_size=None, num_workers=cfg.data.num_workers)
