"""Read a `curate export ps3` destination with NVlabs/PS3's own pre-training loader and print what it
yields as JSON lines. Runs under PS3's environment (it pins webdataset<=0.2.86), not curate's:

    PS3_PYTHON ps3_loader.py PS3_CHECKOUT DEST SAMPLES

PS3's code is imported from the user's checkout (train/src/open_clip_train/data.py); nothing of it is
copied here. Each line: the text PS3 would tokenise, whether it is the global caption, the image size
after resizing, and the bounding box of the ground-truth selection map PS3 builds from the box.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

SIDE = 378  # PS3's low-res side; the map is built at the preprocessed image's size


def load_ps3_data_module(checkout: Path):
    path = checkout / "train" / "src" / "open_clip_train" / "data.py"
    spec = importlib.util.spec_from_file_location("ps3_open_clip_train_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("samples", type=int)
    parser.add_argument("--global-caption-prob", type=float, default=0.25)
    args = parser.parse_args()
    import torch
    from torchvision.transforms import v2

    data = load_ps3_data_module(args.checkout)
    shards = sorted(p.name for p in (args.dest / "images").glob("*.tar"))
    ps3_args = argparse.Namespace(
        train_data_image=[str(args.dest / "images" / s) for s in shards],
        train_data_text_box=[str(args.dest / "text_box" / s) for s in shards],
        dataset_resampled=False, train_data_upsampling_factors=None, seed=0, use_global_caption=True,
        global_caption_prob=args.global_caption_prob, sample_n_box_each_image=1, sentence_masking=False,
        batch_size=1, train_num_samples=args.samples, workers=0, world_size=1)
    preprocess = v2.Compose([v2.ToImage(), v2.Resize((SIDE, SIDE)), v2.ToDtype(torch.float32, scale=True)])
    info = data.get_wds_dataset_image_text_box(ps3_args, preprocess, is_train=True, epoch=0,
                                               tokenizer=lambda text: [text])
    loader = info.dataloader
    for image, text, selection, is_global in loader:
        rows = selection[0].nonzero()
        box = [int(rows[:, 1].min()), int(rows[:, 0].min()), int(rows[:, 1].max()), int(rows[:, 0].max())]
        print(json.dumps({"text": text[0], "is_global": bool(is_global[0]), "size": list(image.shape[-2:]),
                          "map_box": box}), flush=True)
    print(json.dumps({"batches": loader.num_batches, "samples": loader.num_samples}), file=sys.stderr)


if __name__ == "__main__":
    main()
