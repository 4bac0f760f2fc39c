"""Outputs on object storage: a loopback S3 server, the same commit protocol, the same readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pyarrow.fs as pafs
import pytest

from curate.io.layout import OutputLayout
from curate.io.lock import OutputLocked, lock_for
from curate.io.objpath import ObjectPath
from tests.io.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)
from tests.safety.conftest import image_files, load, no_ray, parts_rows  # noqa: F401  (fixture)


def members(root) -> dict[str, bytes]:
    """Every member of every shard of an output, by name."""
    layout = OutputLayout.at(root)
    out = {}
    for shard in layout.shard_files():
        with tarfile.open(fileobj=shard.open_input() if isinstance(shard, ObjectPath) else open(shard, "rb"),
                          mode="r|") as tar:
            for info in tar:
                out[info.name] = tar.extractfile(info).read()
    return out


def test_object_path_reads_writes_lists_and_deletes(s3_bucket):  # noqa: F811
    root = ObjectPath(f"s3://{s3_bucket}/out")
    assert not root.exists()
    (root / "a" / "x.bin").write_bytes(b"12345")
    assert root.exists() and root.is_dir() and (root / "a" / "x.bin").is_file()
    assert (root / "a" / "x.bin").stat().st_size == 5 and (root / "a" / "x.bin").read_bytes() == b"12345"
    assert [p.name for p in root.iterdir()] == ["a"] and (root / "a").sizes() == {"x.bin": 5}
    assert (root / "a" / "x.bin").relative_to(root).as_posix() == "a/x.bin"
    (root / "a" / "x.bin").replace(root / "b.bin")
    assert not (root / "a" / "x.bin").exists() and (root / "b.bin").read_bytes() == b"12345"
    (root / "b.bin").unlink()
    (root / "b.bin").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (root / "b.bin").read_bytes()


def test_the_lock_on_object_storage_refuses_a_second_run_and_frees_on_release(s3_bucket):  # noqa: F811
    path = ObjectPath(f"s3://{s3_bucket}/out/.curate/lock")
    first = lock_for(path).acquire()
    with pytest.raises(OutputLocked, match="another curate run is writing"):
        lock_for(path).acquire()
    first.release()
    lock_for(path).acquire().release()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(s3_bucket):  # noqa: F811
    path = ObjectPath(f"s3://{s3_bucket}/out/.curate/lock")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = {"held": True, "run_id": "gone", "host": os.uname().nodename, "pid": int(dead.stdout),
              "started_at": "-", "heartbeat": 9e12}
    path.write_bytes(json.dumps(holder).encode())
    lock = lock_for(path).acquire()
    assert lock.took_over["run_id"] == "gone"
    lock.release()


def test_a_run_to_s3_matches_a_local_run_and_resumes_after_a_kill(tmp_path, s3_bucket, no_ray,  # noqa: F811
                                                                     monkeypatch):
    import curate.pipeline
    from tests.safety.conftest import ingest_only

    image_files(tmp_path / "in", 7)
    sources = [{"type": "dir", "path": str(tmp_path / "in")}]
    local = load(tmp_path, sources, tmp_path / "local", shard_max_samples=2)
    no_ray(local)

    def killed_after_two(cfg, run, chunks, on_listed, on_status=None):
        for i, rows in enumerate(ingest_only(cfg, run, chunks, on_listed)):
            if i == 2:
                raise KeyboardInterrupt
            yield rows

    uri = f"s3://{s3_bucket}/corpus"
    cfg = load(tmp_path, sources, tmp_path / "unused", shard_max_samples=2)
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"path": uri})})
    monkeypatch.setattr(curate.pipeline, "_process", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        curate.pipeline.run_pipeline(cfg)
    remote = OutputLayout.at(uri)
    assert json.loads(remote.manifest.read_text())["status"] == "interrupted"
    monkeypatch.setattr(curate.pipeline, "_process", ingest_only)
    result = curate.pipeline.run_pipeline(cfg)
    assert result.skipped_done == 6 and result.written == 7  # three commits landed, the third as the kill came
    assert members(uri) == members(tmp_path / "local")  # byte-identical samples, each once
    assert sorted(r["key"] for r in parts_rows(uri)) == sorted(r["key"] for r in parts_rows(tmp_path / "local"))
    manifest = json.loads(remote.manifest.read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["written"] == 7
    fs, path = pafs.FileSystem.from_uri(f"{uri}/index.parquet")
    assert fs.get_file_info(path).size > 0
    assert not [p for p in remote.opened_dir.iterdir()] if remote.opened_dir.exists() else True


def test_ownership_holds_on_object_storage(tmp_path, s3_bucket, no_ray):  # noqa: F811
    from curate.io.ownership import OutputRefused

    image_files(tmp_path / "in", 2)
    foreign = ObjectPath(f"s3://{s3_bucket}/data")
    (foreign / "photo.jpg").write_bytes(b"someone's data")
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "unused")
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"path": str(foreign)})})
    with pytest.raises(OutputRefused, match="not a curate output"):
        no_ray(cfg)
    assert (foreign / "photo.jpg").read_bytes() == b"someone's data"
    assert [p.name for p in foreign.iterdir()] == ["photo.jpg"]


@pytest.mark.slow
def test_ray_workers_write_the_shards_to_s3(tmp_path, s3_bucket):  # noqa: F811
    """The real Ray plan: write tasks on the workers upload shards and parts; the driver gets part rows."""
    import ray

    from curate.pipeline import run_pipeline

    ray.shutdown()  # a Ray started by an earlier test lacks this server's settings in its workers' environment

    image_files(tmp_path / "in", 6)
    uri = f"s3://{s3_bucket}/ray"
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "unused", shard_max_samples=2)
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"path": uri}),
                                 "ray": cfg.ray.model_copy(update={"num_cpus": 2})})
    result = run_pipeline(cfg)
    assert (result.read, result.written, result.quarantined) == (6, 6, 0)
    assert len(members(uri)) == 12  # an image and a record per sample
    again = run_pipeline(cfg)
    assert again.skipped_done == 6 and again.written == 6
    ray.shutdown()




def curate_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)], capture_output=True, timeout=300)


def test_readers_read_an_output_on_s3(tmp_path, s3_bucket):  # noqa: F811
    """inspect, stats, cat (a WebDataset pipe URL), the trainer's loader and both exports, on s3://."""
    import webdataset as wds

    from curate.io.objpath import glob_objects
    from curate.train.data import make_dataset
    from tests.io.test_corpus import write_question_corpus
    from tests.train.test_data import cfg_for

    uri = f"s3://{s3_bucket}/q"
    rows = write_question_corpus(uri, n=3)
    key = rows[1]["key"]

    shown = curate_cli("inspect", uri, key[:8])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["key"] == key

    stats = curate_cli("stats", uri, "--gallery", "2", "--report-dir", tmp_path / "report")
    assert stats.returncode == 0, stats.stderr
    assert "read 3 = written 3 + quarantined 0" in " ".join(stats.stdout.decode().split())
    assert json.loads((tmp_path / "report" / "stats.json").read_text())["counts"]["written"] == 3
    uploaded = ObjectPath(f"{uri}/stats")
    assert {"report.md", "report.html", "stats.json"} <= {p.name for p in uploaded.iterdir()}

    shards = glob_objects(f"{uri}/shards/*.tar")
    assert len(shards) == 2  # 2 samples per shard
    piped = list(wds.WebDataset([f"pipe:{sys.executable} -m curate.cli cat {s}" for s in shards],
                                shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in piped) == sorted(r["key"] for r in rows)
    assert {s["__key__"]: s["png"] for s in piped} == {r["key"]: r["image"] for r in rows}  # bytes as written

    questions = list(make_dataset(cfg_for([f"{uri}/questions/*.tar"]), grid=8, epoch_seed=0))
    regions = list(make_dataset(cfg_for([f"{uri}/shards/*.tar"]), grid=8, epoch_seed=0))
    assert [b["texts"] for b in questions] == [["Which bus number is shown on the front sign?"]] * 3
    assert len(regions) == 3
    assert torch_equal_sets([b["global"] for b in questions], [b["global"] for b in regions])

    from curate.export.ps3 import export_ps3

    exported = export_ps3(uri, f"s3://{s3_bucket}/ps3")
    assert exported.counts["samples"] == 3
    assert len(glob_objects(f"s3://{s3_bucket}/ps3/images/*.tar")) == 2
    assert len(glob_objects(f"s3://{s3_bucket}/ps3/text_box/*.tar")) == 2
    from curate.train.config import TrainConfig

    ps3 = TrainConfig.model_validate({"data": {"shards": [f"s3://{s3_bucket}/ps3/images/*.tar"],
                                               "ps3_text_box": [f"s3://{s3_bucket}/ps3/text_box/*.tar"]},
                                      "optim": {"batch_size": 1}, "model": {"low_res": 64, "hi_res": 128}})
    read_back = list(make_dataset(ps3, grid=8, epoch_seed=0))
    assert sorted(b["texts"][0] for b in read_back) == ["A bus with the number 42 on its sign."] * 3

    from curate.export.llava import export_llava

    llava = export_llava(uri, f"s3://{s3_bucket}/llava")
    entries = json.loads(ObjectPath(f"s3://{s3_bucket}/llava/llava.json").read_text())
    assert llava.counts["entries"] == len(entries) == 3
    for entry in entries:  # each image copied as stored, beside the JSON
        image = ObjectPath(f"s3://{s3_bucket}/llava/{entry['image']}").read_bytes()
        assert image == next(r["image"] for r in rows if r["key"] == entry["image"].split("/")[1].split(".")[0])


def torch_equal_sets(a, b) -> bool:
    """The same tensors, in any order."""
    return sorted(t.sum().item() for t in a) == sorted(t.sum().item() for t in b)
