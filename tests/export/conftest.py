"""A small canvas output made without Ray (the canvas writer fed rendered items directly)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


@pytest.fixture
def canvas_output(tmp_path):
    """(canvas output directory, the VQA folder it was made from) for 3 generated VQA items."""
    from curate.augment.config import load_canvas_config
    from curate.augment.run import CanvasWriter, background_files, render_item
    from curate.augment.vqa_sources import iter_vqa_items
    from curate.samples import generate_vqa_samples

    folder = generate_vqa_samples(tmp_path / "vqa", count=3)
    cfg = load_canvas_config(REPO / "pipelines" / "canvas.yaml", [
        f"source.path={folder / 'llava.json'}", f"source.images={folder / 'images'}",
        f"output.path={tmp_path / 'canvas'}", "canvas.long_side=[512,640]"])
    writer = CanvasWriter(cfg).open()
    for item in iter_vqa_items(cfg.source):
        writer.add(render_item(item, cfg, background_files(None)))
    writer.finish(1.0)
    return tmp_path / "canvas", folder
