"""What a run needs before it starts, checked without starting it (`curate validate`).

Each check returns problems as sentences that name the key or path at fault; nothing is written.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

from curate import backends
from curate.config import PipelineConfig
from curate.io.fs import local_path
from curate.io.layout import OutputLayout
from curate.io.ownership import OutputRefused, check_no_overlap, read_marker
from curate.io.sources import SourceError, list_source


def backend_problems(cfg: PipelineConfig) -> list[str]:
    from curate.pipeline import check_backends

    problems = []
    for kind, section in (("natural", cfg.masks.natural), ("document", cfg.masks.document)):
        checkpoint = getattr(section, "checkpoint", None)
        if checkpoint and not checkpoint.startswith("hf://") and not os.access(checkpoint, os.R_OK):
            problems.append(f"masks.{kind}.checkpoint {checkpoint}: no such readable file (give a local path "
                            "or hf://OWNER/REPO/FILE)")
    try:
        check_backends(cfg)
    except backends.BackendUnavailable as e:
        if "checkpoint" not in str(e):  # said above
            problems.append(str(e))
    return problems


def source_problems(cfg: PipelineConfig, allow_empty: bool = False) -> list[str]:
    """Each source must exist and (unless ``allow_empty``) hold at least one input."""
    problems = []
    for i, src in enumerate(cfg.sources):
        if src.type == "samples":
            continue  # generated at the start of the run
        try:
            first = list(islice(list_source(src), 1))
        except SourceError as e:
            problems.append(f"sources.{i}: {e}")
            continue
        if not first and not allow_empty:
            problems.append(f"sources.{i}: {src.path} holds no input image (pass --allow-empty to accept)")
    return problems


def gpu_problems(cfg: PipelineConfig) -> list[str]:
    """Stages that ask for a GPU on a machine without one (a cluster brings its own: not checked)."""
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return []
    asking = [f"masks.{k}" for k, s in (("natural", cfg.masks.natural), ("document", cfg.masks.document))
              if getattr(s, "num_gpus", 0)]
    asking += [f"caption.{k}" for k in ("natural", "document")
               if getattr(getattr(cfg.caption, k), "runs_in_actor", False) and getattr(cfg.caption, k).num_gpus]
    if cfg.retarget.runs_in_actor and cfg.retarget.num_gpus:
        asking.append("retarget")
    if not asking:
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return [f"{', '.join(asking)} ask for a GPU and this machine has none (the run would fall back to the CPU, "
            "far slower; set num_gpus: 0 to mean it, or run where a GPU is)"]


def output_problems(cfg: PipelineConfig) -> list[str]:
    """The output must be ours or new/empty, apart from the inputs, and writable."""
    path = local_path(cfg.output.path)
    root = Path(path)
    layout = OutputLayout(root)
    try:
        check_no_overlap(root, [src.path for src in cfg.sources])
        if root.exists() and any(root.iterdir()):
            marker = read_marker(layout)
            if marker is None and not layout.manifest.exists():
                return [f"output.path {root}: not empty and not a curate output (curate writes only into new or "
                        "empty directories or its own outputs)"]
            if marker is not None and marker.get("kind") != "corpus":
                return [f"output.path {root}: holds a {marker.get('kind')} output, not a corpus"]
            if marker is not None and marker.get("config_sha256") != cfg.sha256():
                return [f"output.path {root}: holds a run of another config ({marker.get('config_sha256', '?')[:12]}; "
                        f"this one is {cfg.sha256()[:12]}): use another --output"]
    except OutputRefused as e:
        return [str(e)]
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        return [f"output.path {root}: {existing} is not a writable directory"]
    return []


def preflight(cfg: PipelineConfig, allow_empty: bool = False) -> list[str]:
    return backend_problems(cfg) + source_problems(cfg, allow_empty) + gpu_problems(cfg) + output_problems(cfg)
