"""Selection quality on held-out shards (PS3 Table 7): does the trained model pick the patches of the
region a text is about (top-down) and of all labelled regions (bottom-up)?

Reported per held-out region: recall of ground-truth patches among the top ``eval.select_frac`` of
low-res patches by predicted score (with the recall random scores would get beside it), and the recall
of the high-res patches the model actually encodes at each scale, chosen by predicted scores alone.
A picture draws predicted top-down score maps over images with their boxes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from curate.train.config import TrainConfig
from curate.train.data import expand_shards, make_loader
from curate.train.geometry import scale_grids
from curate.train.model import PS3Encoder, box_coverage, chosen_rows
from curate.train.score_maps import ground_truth_patches, selection_recall
from curate.train.text import FrozenTextEncoder


def load_model(cfg: TrainConfig, checkpoint: Path, text_dim: int, device) -> PS3Encoder:
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    model = PS3Encoder(cfg.model, text_dim).to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise RuntimeError(f"{checkpoint} was trained with another model config than this one: {e}") from e
    return model.eval()


def chosen_recall(model: PS3Encoder, image: torch.Tensor, box: torch.Tensor, chosen: tuple) -> list[float]:
    """Per scale: share of the box's patches (``ground_truth_patches``) among those encoded."""
    height, width = image.shape[-2:]
    out = []
    for (rows, cols), index in zip(scale_grids(width, height, model.hi_res, model.hi_scales, model.patch), chosen):
        inside = ground_truth_patches(box_coverage(box[None], rows, cols, "cpu"))[0]
        total = int(inside.sum())
        out.append(float(inside[sorted(set(index))].sum()) / total if total else float("nan"))
    return out


def score_picture(image: torch.Tensor, scores: torch.Tensor, box, text: str, side: int = 384) -> Image.Image:
    """The image with its predicted score map (red, brighter = higher) and the ground-truth box (green)."""
    rgb = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    scale = side / max(rgb.size)
    rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))))
    prob = torch.sigmoid(scores.float()).cpu().numpy()
    heat = Image.fromarray((255 * (prob - prob.min()) / max(1e-6, np.ptp(prob))).astype(np.uint8)).resize(
        rgb.size, Image.Resampling.NEAREST)
    red = Image.merge("RGB", (heat, Image.new("L", rgb.size, 0), Image.new("L", rgb.size, 0)))
    picture = Image.blend(rgb, red, 0.45)
    draw = ImageDraw.Draw(picture)
    x0, y0, x1, y1 = box
    draw.rectangle([x0 * rgb.width, y0 * rgb.height, x1 * rgb.width, y1 * rgb.height], outline=(0, 255, 0), width=2)
    draw.text((4, 4), text[:60], fill=(255, 255, 0))
    return picture


def contact_sheet(pictures: list[Image.Image], columns: int = 4) -> Image.Image:
    side = max(max(p.size) for p in pictures)
    rows = -(-len(pictures) // columns)
    sheet = Image.new("RGB", (columns * side, rows * side), (32, 32, 32))
    for i, p in enumerate(pictures):
        sheet.paste(p, ((i % columns) * side, (i // columns) * side))
    return sheet


def nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if v == v]
    return round(sum(finite) / len(finite), 4) if finite else None


@torch.no_grad()
def evaluate(cfg: TrainConfig, checkpoint: Path | None = None, out_dir: Path | None = None) -> dict:
    """Evaluate ``checkpoint`` (default: OUT/last.pt) on ``cfg.eval.shards``; writes eval.json and
    selection.png under ``out_dir`` (default: OUT/eval) and returns the report."""
    if not cfg.eval.shards:
        raise FileNotFoundError("eval.shards is empty: name held-out shards (--shards or eval.shards)")
    checkpoint = checkpoint or Path(cfg.out) / "last.pt"
    if not checkpoint.exists():  # named before the text model loads (minutes for a real one)
        raise FileNotFoundError(f"{checkpoint}: no checkpoint (train first, or pass --checkpoint)")
    expand_shards(cfg.eval.shards, "eval.shards")  # a pattern that matches nothing, too
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = FrozenTextEncoder(cfg.model.text, device)
    model = load_model(cfg, checkpoint, text.dim, device)
    held_out = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"shards": cfg.eval.shards, "ps3_text_box": [], "global_caption_prob": 0.0,
                                            "max_regions": 1000, "shuffle_buffer": 0, "resampled": False}),
        "optim": cfg.optim.model_copy(update={"batch_size": 1})})
    frac = cfg.eval.select_frac
    top_down, bottom_up, random_td, hires, pictures, images = [], [], [], [], [], 0
    generator = torch.Generator().manual_seed(0)
    for batch in make_loader(held_out, model.grid, cfg.seed):
        if images >= cfg.eval.max_images:
            break
        images += 1
        batch = {k: ([t.to(device) for t in v] if k == "hires" else v.to(device) if torch.is_tensor(v) else v)
                 for k, v in batch.items()}
        out = model(batch, text(batch["texts"]).to(device))
        gt_td, gt_bu = batch["top_down"].flatten(1), batch["bottom_up"].flatten(1)
        top_down += selection_recall(out["top_down"].float(), gt_td, frac).tolist()
        bottom_up += selection_recall(out["bottom_up"].float(), gt_bu, frac).tolist()
        random_td += selection_recall(torch.rand(gt_td.shape, generator=generator).to(device), gt_td, frac).tolist()
        for r, chosen in enumerate(chosen_rows(out["chosen"])):
            hires.append(chosen_recall(model, batch["hires"][0].cpu(), batch["boxes"][r].cpu(), chosen))
        if len(pictures) < cfg.eval.pictures:
            pictures.append(score_picture(batch["hires"][0], out["top_down"][0].view(model.grid, model.grid),
                                          batch["boxes"][0].tolist(), batch["texts"][0]))
    if not images:
        raise RuntimeError(f"eval.shards {cfg.eval.shards}: no sample with a captioned region")
    report = {
        "checkpoint": str(checkpoint), "images": images, "regions": len(top_down),
        "select_frac": frac,
        "recall_top_down": nanmean(top_down), "recall_bottom_up": nanmean(bottom_up),
        "recall_random": nanmean(random_td),
        "hires_scales": model.hi_scales, "hires_select_k": model.select_k,
        "hires_recall_per_scale": [nanmean([row[s] for row in hires]) for s in range(len(model.hi_scales))]
        if hires else [],
    }
    out_dir = out_dir or Path(cfg.out) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
    if pictures:
        contact_sheet(pictures).save(out_dir / "selection.png")
        report["picture"] = str(out_dir / "selection.png")
    return report
