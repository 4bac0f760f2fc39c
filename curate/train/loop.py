"""The training loop: AdamW, warmup + cosine schedule, bf16 autocast on GPU, gradient accumulation,
checkpoint save/resume, DDP when launched with torchrun (WORLD_SIZE > 1).

Resume is exact for a given data order: the checkpoint holds model, optimiser, schedule and step,
and the data stream is fast-forwarded past the micro-batches already consumed.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from curate.train.config import TrainConfig
from curate.train.data import expand_shards, make_loader
from curate.train.losses import same_image_pairs, same_text_positives, selection_loss, sigmoid_contrastive_rows
from curate.train.model import PS3Encoder
from curate.train.score_maps import selection_recall
from curate.train.text import FrozenTextEncoder


def lr_factor(step: int, warmup: int, total: int, min_frac: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to ``min_frac`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress))


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def batches(cfg: TrainConfig, grid: int, skip: int) -> Iterator[dict]:
    """Endless micro-batches, epoch after epoch (each epoch reseeded), skipping the first ``skip``."""
    epoch, seen = 0, 0
    while True:
        produced = False
        for batch in make_loader(cfg, grid, cfg.seed + epoch):
            produced = True
            seen += 1
            if seen > skip:
                yield batch
        if not produced:
            raise RuntimeError(f"data.shards {cfg.data.shards}: no sample with a captioned region "
                               f"(or fewer than batch_size={cfg.optim.batch_size} of them)")
        epoch += 1


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def to_device(batch: dict, device: torch.device) -> dict:
    def move(v):
        if torch.is_tensor(v):
            return v.to(device, non_blocking=True)
        if isinstance(v, list) and v and torch.is_tensor(v[0]):
            return [t.to(device, non_blocking=True) for t in v]
        return v
    return {k: move(v) for k, v in batch.items()}


def compute_losses(model: PS3Encoder, batch: dict, text: FrozenTextEncoder, cfg: TrainConfig) -> dict:
    """Mixed local/global sigmoid contrast (one row per text: a region's local feature or, for a
    global caption, the image's low-res feature) plus top-down and bottom-up selection supervision."""
    out = model(batch, text(batch["texts"]).to(batch["global"].device))
    device = out["image"].device
    positives = same_text_positives(batch["texts"], device)
    ignore = None if cfg.loss.intra_image_negatives else same_image_pairs(batch["region_image"])
    rows = sigmoid_contrastive_rows(out["image"], out["text"], out["scale"], out["bias"], positives, ignore)
    is_global = batch["is_global"]
    local = ~is_global
    losses = {"contrast": rows.mean()}
    if local.any():
        losses["local"] = rows[local].mean()
    if is_global.any():
        losses["global"] = rows[is_global].mean()
    top_down_gt = batch["top_down"].flatten(1)
    bottom_up_gt = batch["bottom_up"].flatten(1)
    zero = out["bottom_up"].sum() * 0.0
    losses["select_top_down"] = selection_loss(out["top_down"][local], top_down_gt[local]) if local.any() else zero
    losses["select_bottom_up"] = selection_loss(out["bottom_up"], bottom_up_gt)
    losses["total"] = losses["contrast"] + cfg.loss.selection_weight * (losses["select_top_down"]
                                                                        + losses["select_bottom_up"])
    frac = cfg.loss.recall_select_frac
    with torch.no_grad():
        if local.any():
            losses["recall_top_down"] = selection_recall(out["top_down"][local].float(), top_down_gt[local],
                                                         frac).nanmean()
        losses["recall_bottom_up"] = selection_recall(out["bottom_up"].float(), bottom_up_gt, frac).nanmean()
    return losses


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, cfg: TrainConfig) -> None:
    core = getattr(model, "module", model)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "config": cfg.model_dump(mode="json"), "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None, stop_at: int | None = None,
          on_end: Callable[[torch.nn.Module], None] | None = None) -> list[dict]:
    """Train (or resume) as configured; returns the logged rows (also written to OUT/log.jsonl).
    ``stop_at`` ends this process early (a checkpoint is saved there) without changing the schedule;
    ``on_end`` gets the trained model (unwrapped from DDP) on every rank."""
    # a pattern that matches nothing fails before a model loads or `out` is made
    expand_shards(cfg.data.shards)
    expand_shards(cfg.data.ps3_text_box, "data.ps3_text_box")
    rank, world, local_rank = distributed()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = FrozenTextEncoder(cfg.model.text, device)
    model = PS3Encoder(cfg.model, text.dim).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
    o = cfg.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.warmup_steps, o.steps, o.min_lr_frac))
    step = 0
    last = out_dir / "last.pt"
    if cfg.resume and last.exists():
        state = torch.load(last, map_location=device, weights_only=False)
        def refused(why: str) -> RuntimeError:
            return RuntimeError(f"{last}: a checkpoint of another model config than this one ({why}); train into "
                                "another `out`, or set resume: false to start over there")

        saved = state.get("config", {}).get("model", {})
        changed = [f"model.{k}: {saved[k]!r} there, {v!r} here" for k, v in cfg.model.model_dump(mode="json").items()
                   if k in saved and saved[k] != v]
        if changed:
            raise refused("; ".join(changed))
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:  # a checkpoint that predates the saved config
            raise refused(str(e)) from e
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"])
    if world > 1:
        device_ids = [local_rank] if device.type == "cuda" else None
        # a step may leave parts unused (no global caption drawn, no local region, UHD's schema)
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                          find_unused_parameters=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda" and o.precision == "bf16")
    stream = batches(cfg, model.module.grid if world > 1 else model.grid, skip=step * o.grad_accum)
    logs, window = [], {"samples": 0, "start": time.perf_counter()}
    log_file = open(out_dir / "log.jsonl", "a") if rank == 0 else None
    model.train()
    try:
        end = min(o.steps, stop_at or o.steps)
        while step < end:
            sums: dict[str, float] = {}
            for _ in range(o.grad_accum):
                batch = to_device(next(stream), device)
                with autocast:
                    losses = compute_losses(model, batch, text, cfg)
                (losses["total"] / o.grad_accum).backward()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / o.grad_accum
                window["samples"] += len(batch["keys"]) * world
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % cfg.log_every == 0 or step == o.steps:
                elapsed = time.perf_counter() - window["start"]
                row = {"step": step, **{k: round(v, 6) for k, v in sums.items()},
                       "lr": scheduler.get_last_lr()[0], "samples_per_s": round(window["samples"] / elapsed, 3)}
                if device.type == "cuda":
                    row["gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                window = {"samples": 0, "start": time.perf_counter()}
                logs.append(row)
                if log_file:
                    log_file.write(json.dumps(row) + "\n")
                    log_file.flush()
                if on_log and rank == 0:
                    on_log(row)
            if rank == 0 and (step % cfg.save_every == 0 or step == end):
                save_checkpoint(last, model, optimizer, scheduler, step, cfg)
    finally:
        if log_file:
            log_file.close()
    if on_end:
        on_end(getattr(model, "module", model))
    return logs
