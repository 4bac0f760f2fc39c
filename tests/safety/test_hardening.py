"""Hardening found on the way: manifest writes of constant size, range-checked config values, an
image format allow-list, multi-frame inputs, and the canvas writer under the same committer."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from curate.config import ConfigError, IngestConfig, load_config
from curate.io.corpus import CorpusWriter
from curate.io.ownership import OutputRefused
from curate.ops.decode import ingest_row
from curate.rows import new_row, quarantine
from tests.conftest import noise_image
from tests.safety.conftest import load, write_config


def test_running_manifest_writes_do_not_grow_with_the_quarantine(tmp_path):
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "out", shard_max_samples=1)
    writer = CorpusWriter(cfg.output.path, cfg).open()
    sizes = []
    for i in range(300):
        writer.add(quarantine(new_row(f"/in/{i}.png", "d"), "truncated", f"cut short at byte {i}"))
        sizes.append((tmp_path / "out" / "manifest.json").stat().st_size)
    assert max(sizes[10:]) - min(sizes[10:]) < 16  # digits of the counts, nothing per input
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["quarantine_reasons"] == {"truncated": 300}
    writer.finish()
    final = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(final["quarantine"]) == 300 and final["status"] == "complete"
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out" / "quarantine.parquet").num_rows == 300


@pytest.mark.parametrize("override", ["select.window_fracs=[]", "select.stride_frac=1e-12",
                                      "select.window_fracs=[0.2,3]", "output.path="])
def test_nonsense_config_values_are_refused(tmp_path, override):
    path = write_config(tmp_path, [{"type": "dir", "path": "in"}], tmp_path / "out")
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[-1]):
        load_config(path, [override])


def _eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 400 400\nnewpath 0 0 moveto 400 400 lineto stroke\n"


def test_formats_outside_the_allow_list_are_never_decoded(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: pytest.fail("the EPS decoder (Ghostscript) was reached"))
    path = tmp_path / "figure.tif"  # the name says TIFF, the bytes are EPS
    path.write_bytes(_eps())
    row = ingest_row(new_row(str(path), "d"), IngestConfig())
    assert row["status"] == "quarantined" and row["reason"] == "not_an_image"


def test_multi_frame_inputs_keep_the_first_frame_and_say_so(tmp_path):
    frames = [noise_image(320, 280, seed=s).convert("P") for s in (1, 2, 3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    row = ingest_row(new_row(str(path), "d"), IngestConfig())
    assert row["status"] == "ok" and "3 frames: the first kept" in row["reencoded"]
    stored = Image.open(io.BytesIO(row["image"]))
    assert getattr(stored, "n_frames", 1) == 1
    assert stored.convert("RGB").tobytes() == Image.open(path).convert("RGB").tobytes()


def test_the_canvas_writer_refuses_a_foreign_directory_too(tmp_path):
    from curate.augment.config import load_canvas_config
    from curate.augment.run import CanvasWriter
    from tests.conftest import REPO

    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cfg = load_canvas_config(REPO / "pipelines" / "canvas.yaml", [f"output.path={foreign}",
                                                                  f"source.path={tmp_path / 'llava.json'}"])
    with pytest.raises(OutputRefused, match="was not written by curate"):
        CanvasWriter(cfg).open()
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
