import io
import json
import math
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from curate.augment.canvas import paste, plan_canvas
from curate.augment.config import CanvasConfig, load_canvas_config
from tests.conftest import REPO
from tests.io.s3 import s3_bucket, s3_endpoint  # noqa: F401  (fixtures)

CFG = CanvasConfig()


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 5000), h=st.integers(1, 5000), index=st.integers(0, 10**6))
def test_plan_keeps_the_box_inside_the_canvas_and_within_the_ranges(w, h, index):
    plan = plan_canvas(w, h, CFG, seed=0, item_index=index)
    x0, y0, x1, y1 = plan.box
    assert 0 <= x0 < x1 <= plan.width and 0 <= y0 < y1 <= plan.height
    assert CFG.long_side[0] <= max(plan.width, plan.height) <= CFG.long_side[1]
    assert 0.5 * 0.99 <= plan.width / plan.height <= 2.0 * 1.01
    if w <= plan.width and h <= plan.height:
        assert (x1 - x0, y1 - y0) == (w, h) and plan.scale == 1.0  # scale range [1, 1]: pasted as is
    else:
        assert plan.scale < 1 and math.isclose((x1 - x0) / w, plan.scale, rel_tol=0.05, abs_tol=2 / w)


def test_plan_is_deterministic_per_seed_and_item():
    a = plan_canvas(300, 200, CFG, seed=1, item_index=5)
    assert a == plan_canvas(300, 200, CFG, seed=1, item_index=5)
    assert a != plan_canvas(300, 200, CFG, seed=2, item_index=5)


def test_pasted_pixels_are_the_source_pixels():
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8), "RGB")
    for i in range(5):
        plan = plan_canvas(200, 150, CanvasConfig(backgrounds={"noise": 1.0, "solid": 1.0}), 0, i)
        canvas = paste(source, plan)
        assert canvas.size == (plan.width, plan.height)
        assert np.array_equal(np.asarray(canvas.crop(plan.box)), np.asarray(source))


def test_scaled_paste_lands_in_the_box():
    cfg = CanvasConfig(scale=(2.0, 3.0), long_side=(2000, 2000))
    source = Image.new("RGB", (100, 80), (255, 0, 0))
    plan = plan_canvas(100, 80, cfg, 0, 0)
    assert 2.0 <= plan.scale <= 3.0
    canvas = np.asarray(paste(source, plan))
    x0, y0, x1, y1 = plan.box
    assert (canvas[y0:y1, x0:x1] == [255, 0, 0]).all()


def test_image_backgrounds_need_a_folder():
    with pytest.raises(ValueError, match="background_images"):
        CanvasConfig(backgrounds={"image": 1.0})


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
    from curate.samples import generate_vqa_samples

    folder = generate_vqa_samples(tmp_path_factory.mktemp("vqa"), count=6)
    entries = json.loads((folder / "llava.json").read_text())
    (folder / "images" / "broken.png").write_bytes((folder / "images" / "vqa-0000.png").read_bytes()[:300])
    entries += [{"id": "text-only", "conversations": [{"from": "human", "value": "Hi"}]},
                {"id": "broken", "image": "broken.png", "conversations": entries[0]["conversations"]},
                {"id": "bad-turns", "image": "vqa-0001.png", "conversations": [{"speaker": "x"}]}]
    (folder / "llava.json").write_text(json.dumps(entries))
    return folder


def run(vqa_dir, out, *extra, on_progress=None):
    from curate.augment.run import run_canvas

    cfg = load_canvas_config(REPO / "pipelines" / "canvas.yaml", [
        f"source.path={vqa_dir / 'llava.json'}", f"source.images={vqa_dir / 'images'}", f"output.path={out}",
        "output.shard_max_samples=4", "ray.progress=false", *extra])
    return run_canvas(cfg, on_progress=on_progress)


def shard_samples(out):
    samples = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


@pytest.mark.slow  # a canvas run through Ray
def test_canvas_run_accounts_for_every_input_and_keeps_pixels_and_qa(vqa_dir, tmp_path):
    result = run(vqa_dir, tmp_path / "a")
    assert (result.read, result.written, result.quarantined) == (9, 6, 3)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    reasons = {q["id"]: q["reason"] for q in manifest["quarantine"]}
    assert reasons == {"text-only": "invalid_entry", "broken": "truncated", "bad-turns": "invalid_entry"}
    entries = {e["id"]: e for e in json.loads((vqa_dir / "llava.json").read_text())}
    samples = shard_samples(tmp_path / "a")
    assert len(samples) == 6
    for sample in samples.values():
        record = json.loads(sample["json"])
        entry = entries[record["source"]["id"]]
        assert record["conversations"] == entry["conversations"]
        canvas = np.asarray(Image.open(io.BytesIO(sample["png"])).convert("RGB"))
        source = np.asarray(Image.open(vqa_dir / "images" / entry["image"]).convert("RGB"))
        x0, y0, x1, y1 = record["box"]
        assert canvas.shape[:2] == (record["height"], record["width"])
        assert np.array_equal(canvas[y0:y1, x0:x1], source)


@pytest.mark.slow  # a canvas run through Ray
def test_canvas_run_is_deterministic_and_resumes(vqa_dir, tmp_path):
    run(vqa_dir, tmp_path / "a")
    first = shard_samples(tmp_path / "a")
    run(vqa_dir, tmp_path / "b")
    assert shard_samples(tmp_path / "b") == first
    again = run(vqa_dir, tmp_path / "a")  # everything committed: nothing redone
    assert again.skipped_done == 9 and again.read == 9 and shard_samples(tmp_path / "a") == first


@pytest.mark.slow  # canvas runs through Ray
def test_ctrl_c_keeps_what_is_committed_and_the_same_command_resumes(vqa_dir, tmp_path):
    """An interrupt at the first commit the driver hears of (it used to leave the manifest saying
    'running' and a click 'Aborted!'): the manifest says interrupted with the committed counts, the
    output is let go, and the same command ends with the uninterrupted run's samples."""
    import signal

    def stop(done, total):
        raise KeyboardInterrupt

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(KeyboardInterrupt):
            run(vqa_dir, tmp_path / "a", "output.shard_max_samples=1", on_progress=stop)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    import ray

    ray.shutdown()  # what the process's exit does: write tasks still in flight stop with it
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["counts"]["read"] >= 1
    # a task may commit between the count and the shutdown: the parts, not the manifest, are the record
    assert manifest["counts"]["written"] <= len(shard_samples(tmp_path / "a"))
    resumed = run(vqa_dir, tmp_path / "a", "output.shard_max_samples=1")
    assert resumed.skipped_done >= manifest["counts"]["read"] and resumed.read == 9
    run(vqa_dir, tmp_path / "clean", "output.shard_max_samples=1")
    assert shard_samples(tmp_path / "a") == shard_samples(tmp_path / "clean")


@pytest.mark.slow  # a canvas run through Ray
def test_table_source_reads_hf_image_structs(vqa_dir, tmp_path):
    result = run(vqa_dir, tmp_path / "t", "source.format=table", f"source.path={vqa_dir / 'vqa.parquet'}",
                 "source.id_column=id")
    assert (result.read, result.written) == (6, 6)
    record = json.loads(next(iter(shard_samples(tmp_path / "t").values()))["json"])
    assert record["conversations"][0]["value"].startswith("<image>\n")
    assert record["conversations"][1]["from"] == "gpt"


@pytest.mark.slow  # a canvas run through Ray
def test_a_table_goes_to_the_render_tasks_in_blocks_along_its_row_groups(vqa_dir, tmp_path, monkeypatch):
    """Each row group in one block, so one task reads it (not every worker its blocks land on); blocks
    of 4 rows here, so groups of 2 close a block where they end."""
    import pyarrow.parquet as pq

    import curate.runner

    table = tmp_path / "groups_of_2.parquet"
    pq.write_table(pq.read_table(vqa_dir / "vqa.parquet"), table, row_group_size=2)
    blocks = []
    cut = curate.runner.rechunk_by_group

    def spy(*args, **kwargs):
        for block in cut(*args, **kwargs):
            blocks.append(block["table_row"].to_pylist())
            yield block

    monkeypatch.setattr(curate.runner, "GROUP_BLOCK_ROWS", 4)
    monkeypatch.setattr(curate.runner, "rechunk_by_group", spy)
    result = run(vqa_dir, tmp_path / "g", "source.format=table", f"source.path={table}", "source.id_column=id")
    assert (result.read, result.written) == (6, 6)
    assert blocks == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.slow  # a canvas run through Ray, writing to a loopback S3 server
def test_canvas_workers_write_to_object_storage(vqa_dir, tmp_path, s3_bucket):  # noqa: F811
    """The render tasks commit their shards themselves (the driver gets part rows only), so an
    object-storage output works and equals a local one."""
    import ray

    from curate.io.objpath import ObjectPath, glob_objects

    ray.shutdown()  # a Ray started by an earlier test lacks this server's settings in its workers' environment
    local = run(vqa_dir, tmp_path / "local")
    uri = f"s3://{s3_bucket}/canvas"
    remote = run(vqa_dir, uri)
    ray.shutdown()
    assert (remote.read, remote.written, remote.quarantined) == (local.read, local.written, local.quarantined)
    downloaded = tmp_path / "down" / "shards"
    downloaded.mkdir(parents=True)
    for shard in glob_objects(f"{uri}/shards/*.tar"):
        (downloaded / shard.rsplit("/", 1)[1]).write_bytes(ObjectPath(shard).read_bytes())
    assert shard_samples(tmp_path / "down") == shard_samples(tmp_path / "local")
    manifest = json.loads(ObjectPath(f"{uri}/manifest.json").read_bytes())
    assert manifest["status"] == "complete" and manifest["counts"]["read"] == 9
    assert ObjectPath(f"{uri}/index.parquet").exists()


@pytest.mark.slow  # canvas runs through Ray
def test_canvas_sources_on_object_storage(vqa_dir, tmp_path, s3_bucket):  # noqa: F811
    """A LLaVA file and its images on S3 are read as a local copy is: the same canvases (pixels and
    QA), the records naming the S3 objects."""
    import ray

    from curate.io.objpath import ObjectPath

    ray.shutdown()  # a Ray started by an earlier test lacks this server's settings in its workers' environment
    base = f"s3://{s3_bucket}/vqa"
    for path in [vqa_dir / "llava.json", *sorted((vqa_dir / "images").iterdir())]:
        ObjectPath(f"{base}/{path.relative_to(vqa_dir)}").write_bytes(path.read_bytes())
    local = run(vqa_dir, tmp_path / "local")
    remote = run(vqa_dir, tmp_path / "remote", f"source.path={base}/llava.json", f"source.images={base}/images")
    ray.shutdown()
    assert (remote.read, remote.written, remote.quarantined) == (local.read, local.written, local.quarantined)
    mine, theirs = shard_samples(tmp_path / "remote"), shard_samples(tmp_path / "local")
    assert len(mine) == len(theirs) == 6
    by_id = {json.loads(m["json"])["source"]["id"]: m for m in theirs.values()}
    for sample in mine.values():
        record = json.loads(sample["json"])
        assert record["source"]["uri"].startswith(f"{base}/images/")
        twin = by_id[record["source"]["id"]]
        assert sample["png"] == twin["png"] and record["conversations"] == json.loads(twin["json"])["conversations"]


def rendered_rows(cfg, n: int) -> list[dict]:
    from curate.augment.run import background_files, render_item, vqa_batches

    items = next(vqa_batches(cfg.source)).to_pylist()[:n]
    return [render_item(item, cfg, background_files(None)) for item in items]


def test_a_block_committed_twice_by_a_retried_task_is_dropped_at_the_end(vqa_dir, tmp_path):
    """Ray may retry a write task after its first attempt committed: the second part holds the same
    inputs (same block digest) and the run's end drops it, so nothing is counted or indexed twice."""
    from curate.augment.run import CanvasRun, CanvasSink
    from curate.io.writing import write_block

    cfg = load_canvas_config(REPO / "pipelines" / "canvas.yaml", [
        f"source.path={vqa_dir / 'llava.json'}", f"source.images={vqa_dir / 'images'}",
        f"output.path={tmp_path / 'c'}", "ray.progress=false"])
    canvas_run = CanvasRun(cfg).open()
    rows = rendered_rows(cfg, 3)
    sink = CanvasSink(canvas_run.target, cfg, canvas_run.committer.take_number)
    first = write_block(rows, sink)
    retried = write_block(rows, sink)
    assert first != retried and len(list((tmp_path / "c" / "parts").glob("*.parquet"))) == 2
    canvas_run.committed(first + retried)
    canvas_run.finish(1.0)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["counts"] == {"read": 3, "written": 3, "quarantined": 0}
    assert len(shard_samples(tmp_path / "c")) == 3 and any("same inputs" in n for n in canvas_run.notes)


def test_the_write_stage_returns_part_rows_only(vqa_dir, tmp_path):
    """What travels back to the driver from the canvas's write stage: commit records, no image bytes."""
    import pyarrow as pa

    from curate.augment.run import CanvasRun, CanvasSink, render_batch, vqa_batches
    from curate.io.writing import write_table

    cfg = load_canvas_config(REPO / "pipelines" / "canvas.yaml", [
        f"source.path={vqa_dir / 'llava.json'}", f"source.images={vqa_dir / 'images'}",
        f"output.path={tmp_path / 'c'}", "ray.progress=false"])
    canvas_run = CanvasRun(cfg).open()
    rendered = render_batch(next(vqa_batches(cfg.source)).slice(0, 2), cfg)
    assert rendered.column("canvas").null_count == 0  # the canvases reach the writer
    parts = write_table(rendered, CanvasSink(canvas_run.target, cfg, canvas_run.committer.take_number))
    assert parts.num_rows == 2 and not any(pa.types.is_binary(f.type) for f in parts.schema)
    assert parts.nbytes < 2000
    # the driver fails before hearing of that commit: the output stays claimed, and resumable
    canvas_run.abort()
    assert (tmp_path / "c" / ".curate" / "output.json").exists()
    assert len(list((tmp_path / "c" / "parts").glob("*.parquet"))) == 1


@pytest.mark.slow  # a canvas run through Ray
def test_a_render_task_makes_at_most_a_block_of_canvases_when_blocks_grow(vqa_dir, tmp_path, monkeypatch):
    """Past the first 4,096 blocks the runner's input blocks grow (up to 4,096 rows, so that 10^8
    listed inputs stay ~30k object refs); a canvas task must still render only CANVASES_PER_TASK
    canvases at a time, or a long LLaVA listing would hold thousands of 1K-4K canvases per task.
    Here every block is 9 rows and a task may render at most 4: each call commits its own shard."""
    import itertools

    import curate.augment.run as canvas_run
    import curate.runner

    monkeypatch.setattr(canvas_run, "CANVASES_PER_TASK", 4)
    monkeypatch.setattr(curate.runner, "block_sizes", lambda small: itertools.repeat(9))
    result = run(vqa_dir, tmp_path / "c", "output.shard_max_samples=100")
    assert (result.read, result.written) == (9, 6)
    for shard in (tmp_path / "c" / "shards").glob("*.tar"):
        with tarfile.open(shard) as tar:
            assert len({m.name.split(".")[0] for m in tar.getmembers()}) <= 4, shard.name


def test_ctrl_c_on_the_command_line_says_how_to_resume(vqa_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import curate.augment.run as canvas_run
    from curate.cli import app

    def interrupted(cfg, on_progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(canvas_run, "run_canvas", interrupted)
    result = CliRunner().invoke(app, ["augment", "canvas", str(REPO / "pipelines" / "canvas.yaml"),
                                      "-o", str(tmp_path / "out"), "--set", f"source.path={vqa_dir / 'llava.json'}",
                                      "--set", f"source.images={vqa_dir / 'images'}"])
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    assert f"interrupted: no sample was committed yet in {tmp_path / 'out'}" in said
    assert "run the same command again to resume" in said


@pytest.mark.slow  # a canvas run through Ray, as a real command
def test_the_command_keeps_rays_lines_in_the_outputs_logs(vqa_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    canvas = [sys.executable, "-m", "curate.cli", "augment", "canvas", str(REPO / "pipelines" / "canvas.yaml")]
    done = subprocess.run([*canvas, "-o", str(out), "--set", f"source.path={vqa_dir / 'llava.json'}",
                           "--set", f"source.images={vqa_dir / 'images'}", "--set", "ray.progress=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    assert "WARNING" not in printed and "core_worker" not in printed, printed[-3000:]
    [log] = (out / "logs").glob("run-*.log")
    assert f"logs (Ray's warnings, worker logs): {out / 'logs'}" in " ".join(printed.split())


def test_background_photos_of_a_relative_folder_are_named_whole_for_the_render_tasks(tmp_path, monkeypatch):
    from curate.augment.run import background_files

    (tmp_path / "bg").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "bg" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    assert background_files("bg") == [tmp_path / "bg" / "a.jpg"]  # opened on other nodes as it is


def test_the_command_takes_its_vqa_source_as_an_input_as_run_does(tmp_path, monkeypatch):
    """`-i llava.json --images DIR` or `-i table.parquet` instead of two --set source.* arguments."""
    from typer.testing import CliRunner

    import curate.augment.run as canvas_run
    from curate.augment.run import CanvasResult
    from curate.cli import app

    seen = []

    def record(cfg, on_progress=None):
        seen.append(cfg.source)
        return CanvasResult(0, 0, 0, 0, str(cfg.output.path))

    monkeypatch.setattr(canvas_run, "run_canvas", record)
    canvas = ["augment", "canvas", str(REPO / "pipelines" / "canvas.yaml"), "-o", str(tmp_path / "out")]
    done = CliRunner().invoke(app, [*canvas, "-i", "vqa/llava.json", "--images", "vqa/pics"])
    assert done.exit_code == 0, done.output
    done = CliRunner().invoke(app, [*canvas, "-i", "hf/train.parquet"])
    assert done.exit_code == 0, done.output
    assert [(s.format, s.path, s.images) for s in seen] == [("llava", "vqa/llava.json", "vqa/pics"),
                                                            ("table", "hf/train.parquet", None)]
    done = CliRunner().invoke(app, [*canvas, "-i", "vqa/list.txt"])
    said = " ".join(done.output.split())
    assert done.exit_code == 2 and "--input vqa/list.txt: a LLaVA JSON (.json) or a parquet table (.parquet)" in said
    done = CliRunner().invoke(app, [*canvas, "-i", "hf/train.parquet", "--images", "x"])
    assert done.exit_code == 2 and "--images goes with a LLaVA JSON" in " ".join(done.output.split())
