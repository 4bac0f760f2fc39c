"""Helpers for the data-safety reproductions: configs, finished rows, hand-made WebDataset tars, and
a stand-in for the Ray stages so a whole run's accounting is tested in seconds."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from curate.config import load_config
from curate.stages.ingest import IngestStage
from tests.conftest import noise_image, png_bytes


def write_config(tmp_path: Path, sources: list[dict], out: Path, **output) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "safety", "sources": sources, "masks": {"natural": {"backend": "skimage_felzenszwalb"}},
        "output": {"path": str(out), "shard_max_samples": 2, **output}, "ray": {"progress": False},
    }))
    return path


def load(tmp_path: Path, sources: list[dict], out: Path, **output):
    return load_config(write_config(tmp_path, sources, out, **output))


def image_files(folder: Path, n: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"img-{i:03d}.png"
        path.write_bytes(png_bytes(noise_image(300, 260, seed=i)))
        paths.append(path)
    return paths


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def ingest_only(cfg, run, chunks, on_listed, on_status=None):
    """Stands in for the Ray plan in this process: the same ledger skip, the ingest stage (no
    regions) and the same write tasks, one per chunk (the writer's view of a run)."""
    import itertools

    from curate.io import interrupt
    from curate.io.corpus import BlockSink
    from curate.io.index import read_part
    from curate.io.ledger import Ledger
    from curate.io.writing import write_block
    from curate.runner import skip_committed

    chunks = list(chunks)
    on_listed(sum(t.num_rows for t in chunks))
    ledger = Ledger()
    for part in run.layout.part_files():
        ledger.seed(read_part(part))
    numbers = itertools.count(run.committer.next_number)
    sink = BlockSink(run.target, cfg, lambda: next(numbers), ledger)
    stage = IngestStage(cfg)
    for table in chunks:
        rows = []
        for row in skip_committed(table, ledger).to_pylist():
            rows.append(row if row["status"] == "quarantined" else stage.process([row])[0])
        for start in range(0, len(rows), cfg.output.shard_max_samples):
            with interrupt.critical():  # a worker's write is never cut by the driver's Ctrl-C
                committed = write_block(rows[start:start + cfg.output.shard_max_samples], sink)
            yield committed
    yield ledger.n_skipped


@pytest.fixture
def no_ray(monkeypatch):
    """run_pipeline with ingest_only in place of Ray: listing, resume and commit logic run for real."""
    import curate.pipeline

    monkeypatch.setattr(curate.pipeline, "_process", ingest_only)
    return curate.pipeline.run_pipeline


def parts_rows(out: Path) -> list[dict]:
    from curate.io.index import read_parts
    from curate.io.layout import OutputLayout

    return read_parts(OutputLayout(out)).to_pylist()


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())
