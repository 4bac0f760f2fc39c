"""What the Ray driver carries per image: bytes it receives and CPU seconds it spends, for this
checkout and for an earlier revision (where the driver received every row, image bytes included,
and wrote the shards itself), on the same input and config, in the same run.

    python benchmarks/driver_load.py --images 300 --before 26afad0 --workdir /tmp/curate-driver
    python benchmarks/driver_load.py --kind canvas --images 400 --before 7d6c08e --workdir /tmp/curate-canvas

Each variant runs in its own process (``--probe``), which wraps ``ray.data.Dataset.iter_batches``
(the one place where either revision's driver takes rows out of Ray) and adds up the Arrow bytes of
what it gets, and reads its own CPU time (driver process only: Ray's workers, raylet and object
store are other processes). ``--s3`` adds this checkout writing to a loopback S3 server (moto).
Around each run the whole machine's busy CPU seconds are read (``/proc/stat``), and with
``--by-process`` each process's, by title (Ray names its workers by what they run).
``--kind canvas`` runs ``curate augment canvas`` over LLaVA-style VQA samples instead (``curate
samples --vqa``), each canvas 1K-4K.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_photo(folder: Path, seed: int, i: int) -> int:
    """Photo ``i``: a smooth colour field with grain at a mixed size (long side 1024-2560, aspect 1:2
    to 2:1), so its encoded size is close to a real 2K photo's; returns its bytes. Each photo has
    its own random stream, so the set does not depend on how many processes draw it."""
    path = folder / f"photo{i:05d}.jpg"
    if not path.exists():
        rng = np.random.default_rng([seed, i])
        long_side = int(rng.integers(1024, 2561))
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        w, h = (long_side, max(256, int(long_side / aspect))) if aspect >= 1 else \
            (max(256, int(long_side * aspect)), long_side)
        coarse = rng.integers(0, 256, size=(max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 6, size=(h, w, 1))
        Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path.stat().st_size


def make_photos(folder: Path, n: int, seed: int = 0) -> int:
    """``n`` photos of ``make_photo`` drawn on every core (a 16-core run needs thousands); their bytes."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        return sum(pool.map(partial(make_photo, folder, seed), range(n), chunksize=8))


def write_config(workdir: Path, inputs: Path, output: str) -> Path:
    raw = yaml.safe_load((REPO / "pipelines" / "local.yaml").read_text())
    raw["name"] = "driver-load"
    raw["sources"] = [{"type": "dir", "path": str(inputs), "kind": "natural"}]
    raw["masks"]["natural"]["work_side"] = 384
    raw["output"] = {"path": output, "shard_max_samples": 64}
    raw["ray"] = {"progress": False, "ingest_batch_size": 16, "cpu_batch_size": 8}
    path = workdir / f"config-{abs(hash(output)) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_canvas_config(workdir: Path, vqa: Path, output: str) -> Path:
    raw = yaml.safe_load((REPO / "pipelines" / "canvas.yaml").read_text())
    raw["source"].update(path=str(vqa / "llava.json"), images=str(vqa / "images"))
    raw["output"] = {"path": output, "shard_max_samples": 64}
    raw["ray"] = {"progress": False, "ingest_batch_size": 8}
    path = workdir / f"canvas-{abs(hash(output)) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_from_config(config: Path):
    """(the run's result, its output path) for a corpus or canvas config file."""
    if "canvas" in yaml.safe_load(config.read_text()):
        from curate.augment.config import load_canvas_config
        from curate.augment.run import run_canvas

        cfg = load_canvas_config(config)
        return run_canvas(cfg), cfg.output.path
    from curate.config import load_config
    from curate.pipeline import run_pipeline

    cfg = load_config(config)
    return run_pipeline(cfg), cfg.output.path


def probe(repo: Path, config: Path, s3: bool) -> dict:
    """Run the pipeline of ``repo`` in this process, counting what the driver takes out of Ray."""
    sys.path.insert(0, str(repo))
    if s3:
        start_s3(config)
    import ray.data

    taken = {"bytes": 0, "rows": 0, "batches": 0, "cpu_first": None, "cpu_last": None}
    original = ray.data.Dataset.iter_batches

    def counted(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            taken["cpu_first"] = taken["cpu_first"] if taken["cpu_first"] is not None else time.process_time()
            taken["cpu_last"] = time.process_time()
            taken["batches"] += 1
            taken["rows"] += batch.num_rows if hasattr(batch, "num_rows") else len(batch)
            taken["bytes"] += batch.nbytes if hasattr(batch, "nbytes") else sum(v.nbytes for v in batch.values())
            yield batch

    ray.data.Dataset.iter_batches = counted
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result, output = run_from_config(config)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"read": result.read, "written": result.written, "quarantined": result.quarantined,
            "driver_bytes_received": taken["bytes"], "driver_rows_received": taken["rows"],
            "driver_batches": taken["batches"], "driver_cpu_s": round(cpu, 2), "wall_s": round(wall, 1),
            # from the first rows to the last: the per-image work, without Ray's start and the plan's fill
            "driver_cpu_s_while_rows_arrive": round((taken["cpu_last"] or 0) - (taken["cpu_first"] or 0), 2),
            "steady_images_per_s": steady_rate(str(output)),
            "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def steady_rate(output: str) -> float | None:
    """Images per second between the first and the last commit (parts' modification times): the
    rate once the plan runs full, without Ray's start or the first shard's fill. Local outputs only."""
    import pyarrow.parquet as pq

    parts = sorted((Path(output) / "parts").glob("*.parquet"), key=lambda p: p.stat().st_mtime)
    if len(parts) < 2 or "://" in output:
        return None
    rows = sum(pq.read_metadata(p).num_rows for p in parts[1:])
    return round(rows / (parts[-1].stat().st_mtime - parts[0].stat().st_mtime), 2)


S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def start_s3_server() -> tuple[subprocess.Popen, str]:
    """A loopback S3 server (moto) in its own process, so its CPU is not counted as the driver's."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto server did not start")


def start_s3(config: Path) -> None:
    """A fresh bucket on the server named by AWS_ENDPOINT_URL (set by main)."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1",
                           access_key="bench", secret_key="bench", allow_bucket_creation=True)
    bucket = yaml.safe_load(config.read_text())["output"]["path"].split("/")[2]
    if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
        fs.create_dir(bucket)
    else:
        fs.delete_dir_contents(bucket)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc counts CPU time in these


def machine_cpu_seconds() -> float | None:
    """Busy CPU seconds of every process on the machine since boot, all cores (Linux /proc/stat; idle
    and I/O wait left out). Around a run it is the whole run's work (driver, Ray's workers, raylet,
    object store): on a machine whose cores are all busy, less work per image is more images/s, and it
    varies less from run to run than wall time."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def process_cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (title, CPU seconds so far) of every process on the machine (Linux /proc). Ray names its
    workers by what they run (``ray::StreamWriterActor``, ``ray::MapWorker(MapBatches(...))``)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (title, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


class ProcessCpuSampler:
    """CPU seconds used during a run, by process title: /proc read every second on a thread (a
    process's last second before it exits is missed)."""

    def __init__(self):
        import threading

        self.start = process_cpu_seconds()
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for pid, (title, cpu) in process_cpu_seconds().items():
                known = self.last.get(pid)  # a Ray worker's title changes with its task: keep the named one
                self.last[pid] = (title if title.startswith("ray::") or not known else known[0], cpu)
            if self._stop.wait(1.0):
                return

    def by_title(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        totals: dict[str, float] = {}
        for pid, (title, cpu) in self.last.items():
            title = title.split(".submit")[0].split(".__init__")[0] or "?"
            used = cpu - self.start.get(pid, ("", 0.0))[1]
            if used >= 0.1:
                totals[title] = round(totals.get(title, 0.0) + used, 1)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def run_once(name: str, repo: Path, config: Path, s3: bool = False, by_process: bool = False) -> dict:
    if not s3:
        out = Path(yaml.safe_load(config.read_text())["output"]["path"])
        subprocess.run(["rm", "-rf", str(out)], check=True)
    cmd = [sys.executable, __file__, "--probe", "--repo", str(repo), "--config", str(config)] + (["--s3"] if s3 else [])
    cpu_before = machine_cpu_seconds()
    sampler = ProcessCpuSampler() if by_process else None
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=repo,
                          # the revision measured first on the path, before any packages the caller put there
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(repo)] + [p for p in [os.environ.get("PYTHONPATH")] if p])})
    cpu_after = machine_cpu_seconds()
    by_title = sampler.by_title() if sampler else None
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["machine_cpu_s"] = round(cpu_after - cpu_before, 1) if cpu_before is not None else None
    if by_title is not None:
        result["cpu_s_by_process"] = by_title
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def summarise(runs: list[dict]) -> dict:
    """The run with the median wall time, with every run's wall time and driver CPU beside it."""
    median = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {**median, "wall_s_runs": [r["wall_s"] for r in runs],
            "steady_images_per_s_runs": [r["steady_images_per_s"] for r in runs],
            "driver_cpu_s_runs": [r["driver_cpu_s"] for r in runs],
            "machine_cpu_s_runs": [r["machine_cpu_s"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["corpus", "canvas"], default="corpus",
                        help="corpus: curate run over photos; canvas: curate augment canvas over VQA samples")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--before", default="26afad0", help="the revision to compare with")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/curate-driver"))
    parser.add_argument("--s3", action="store_true", help="also run this checkout with output on loopback S3")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (the median is reported)")
    parser.add_argument("--by-process", action="store_true",
                        help="also each run's CPU seconds by process title (Linux /proc, read every second)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.repo, args.config, args.s3)))
        return

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if args.kind == "canvas":
        sys.path.insert(0, str(REPO))
        from curate.samples import generate_vqa_samples

        inputs = work / "vqa"
        if not (inputs / "llava.json").exists():
            generate_vqa_samples(inputs, count=args.images)
        image_bytes = sum(p.stat().st_size for p in (inputs / "images").iterdir())
        configure = write_canvas_config
    else:
        inputs = work / "photos"
        image_bytes = make_photos(inputs, args.images)
        configure = write_config
    before = work / "before"
    if not before.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before], check=True)
    variants = {"before": (before, configure(work, inputs, str(work / "out-before")), False),
                "after": (REPO, configure(work, inputs, str(work / "out-after")), False)}
    if args.s3:
        server, endpoint = start_s3_server()
        os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
        variants["after_s3"] = (REPO, configure(work, inputs, "s3://bench/out"), True)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so drift on the machine touches every variant alike
        for name, (repo, config, s3) in variants.items():
            runs[name].append(run_once(name, repo, config, s3, args.by_process))
    results = {
        "kind": args.kind, "images": args.images, "mean_image_bytes": image_bytes // args.images,
        "before_revision": args.before,
        "after_revision": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip(),
        "cores": os.cpu_count(), "repeats": args.repeats,
        **{name: summarise(r) for name, r in runs.items()},
    }
    for name in [k for k in ("before", "after", "after_s3") if k in results]:
        r = results[name]
        r["driver_bytes_per_image"] = round(r["driver_bytes_received"] / max(r["read"], 1))
        r["driver_cpu_s_per_1000_images"] = round(1000 * r["driver_cpu_s"] / max(r["read"], 1), 1)
        r["driver_cpu_s_per_1000_images_while_rows_arrive"] = round(
            1000 * r["driver_cpu_s_while_rows_arrive"] / max(r["driver_rows_received"], 1), 1)
        r["images_per_s"] = round(r["read"] / r["wall_s"], 2)
    b, a = results["before"], results["after"]
    results["ratios_before_over_after"] = {
        "driver_bytes_per_image": round(b["driver_bytes_per_image"] / max(a["driver_bytes_per_image"], 1), 1),
        "driver_cpu_s_per_1000_images": round(b["driver_cpu_s_per_1000_images"]
                                              / max(a["driver_cpu_s_per_1000_images"], 1e-9), 2),
        "images_per_s_after_over_before": round(a["images_per_s"] / b["images_per_s"], 2),
        "steady_images_per_s_after_over_before": round(a["steady_images_per_s"] / b["steady_images_per_s"], 2),
        # interleaved pairs (run i of each variant ran back to back): speed after / before
        "pairs_images_per_s_after_over_before": [round(bw / aw, 2)
                                                 for bw, aw in zip(b["wall_s_runs"], a["wall_s_runs"])],
    }
    if None not in b["machine_cpu_s_runs"] + a["machine_cpu_s_runs"]:
        # the whole machine's work per image, median of the runs: under 1 means the after variant does less
        results["ratios_before_over_after"]["machine_cpu_s_after_over_before"] = round(
            statistics.median(a["machine_cpu_s_runs"]) / statistics.median(b["machine_cpu_s_runs"]), 3)
        for r in (a, b):
            r["machine_cpu_s_per_image"] = round(statistics.median(r["machine_cpu_s_runs"]) / max(r["read"], 1), 4)
    if args.s3:
        server.terminate()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
