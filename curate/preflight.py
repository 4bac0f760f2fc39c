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
from curate.io.ownership import OutputRefused, check_claim
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


# listed inputs a folder's or a glob's check looks at (their listing reads names only, and a folder's
# walk is whole before its first); a list's or a tar's reads one (a tar is read to list its members)
LOOK_AT_INPUTS = 1000


def source_problems(cfg: PipelineConfig, allow_empty: bool = False) -> list[str]:
    """Each source must exist and (unless ``allow_empty``) hold at least one input."""
    problems = []
    for i, src in enumerate(cfg.sources):
        if src.type == "samples":
            continue  # generated at the start of the run
        try:
            first = list(islice(list_source(src), LOOK_AT_INPUTS if src.type in ("dir", "glob") else 1))
        except SourceError as e:
            problems.append(f"sources.{i}: {e}")
            continue
        if not first and not allow_empty:
            problems.append(f"sources.{i}: {src.path} holds no input image (pass --allow-empty to accept)")
        elif src.type in ("dir", "glob") and first and all(row["status"] == "quarantined" for row in first):
            shown = "the first" if len(first) == LOOK_AT_INPUTS else "all"
            problems.append(f"sources.{i}: {src.path}: {shown} {len(first)} inputs listed are quarantined before a "
                            f"byte is read (the first, {first[0]['uri']}: {first[0]['reason']}: {first[0]['detail']})")
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
    root = Path(local_path(cfg.output.path))
    try:
        check_claim(OutputLayout(root), "corpus", cfg.sha256(), [src.path for src in cfg.sources])
    except OutputRefused as e:
        return [f"output.path: {e}"]
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        return [f"output.path {root}: {existing} is not a writable directory"]
    return []


def preflight(cfg: PipelineConfig, allow_empty: bool = False) -> list[str]:
    return backend_problems(cfg) + source_problems(cfg, allow_empty) + gpu_problems(cfg) + output_problems(cfg)
