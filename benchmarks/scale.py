"""Streaming at scale: `curate run` over many small generated images plus copies of every hostile
input kind, with the memory of the whole run sampled from /proc.

    python benchmarks/scale.py --images 20000 --hostile-copies 20 --workdir /tmp/curate-scale

Reports images/s and images/s per core, peak RSS of the driver and of the whole process tree
(driver + Ray's raylet, GCS, object store and workers), and checks read = written + quarantined.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_images(folder: Path, n: int, width: int, height: int, seed: int = 0) -> None:
    """Textured scenes with a few shapes: cheap to make, not trivial to segment."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / f"{i // 1000:03d}" / f"img{i:06d}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        base = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
            s = int(rng.integers(10, 40))
            draw.ellipse((x, y, x + s, y + s), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        img.save(path, quality=85)


def tree_rss(root: int) -> tuple[int, int]:
    """(RSS of ``root``, RSS of ``root`` and all its descendants), bytes, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as f:
                kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = kb * 1024
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return rss.get(root, 0), total


def run_sampled(config: Path) -> dict:
    """`curate run CONFIG` in a subprocess with its memory sampled every 0.5 s: wall seconds, peak
    RSS of the driver and of its whole process tree (bytes), and the driver's RSS over time (MiB)."""
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"driver": 0, "tree": 0}
    trace: list[tuple[float, int]] = []
    start = time.perf_counter()

    def sample() -> None:
        while proc.poll() is None:
            driver, tree = tree_rss(proc.pid)
            peaks["driver"], peaks["tree"] = max(peaks["driver"], driver), max(peaks["tree"], tree)
            trace.append((round(time.perf_counter() - start, 1), round(driver / 2**20)))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode:
        raise SystemExit(output[-4000:])
    return {"seconds": seconds, "peaks": peaks, "trace": trace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--hostile-copies", type=int, default=20)
    parser.add_argument("--size", default="320x256")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/curate-scale"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    inputs = args.workdir / "inputs"
    t0 = time.perf_counter()
    make_images(inputs / "scenes", args.images, width, height)
    from tests.conftest import write_hostile_inputs

    expected_quarantine, seen = 0, set()
    for k in range(args.hostile_copies):
        folder = inputs / "hostile" / f"{k:03d}"
        expected = write_hostile_inputs(folder)
        for name, outcome in expected.items():
            if outcome != "ok":
                expected_quarantine += 1
                continue
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            expected_quarantine += digest in seen  # an identical good file in an earlier copy: duplicate
            seen.add(digest)
    print(f"inputs ready in {time.perf_counter() - t0:.0f}s", flush=True)

    raw = yaml.safe_load((REPO / "pipelines" / "local.yaml").read_text())
    raw["sources"] = [{"type": "dir", "path": str(inputs), "kind": "natural"}]
    raw["ingest"]["min_side"] = 128
    raw["masks"]["natural"]["work_side"] = 256
    raw["output"] = {"path": str(args.workdir / "out"), "shard_max_samples": 1000}
    raw["ray"] = {"progress": False, "ingest_batch_size": 32, "cpu_batch_size": 16}
    config = args.workdir / "scale.yaml"
    config.write_text(yaml.safe_dump(raw))
    subprocess.run(["rm", "-rf", str(args.workdir / "out")], check=True)

    sampled = run_sampled(config)
    seconds, peaks = sampled["seconds"], sampled["peaks"]
    manifest = json.loads((args.workdir / "out" / "manifest.json").read_text())
    c = manifest["counts"]
    cores = os.cpu_count() or 1
    result = {
        "inputs": c["read"], "written": c["written"], "quarantined": c["quarantined"],
        "expected_quarantined": expected_quarantine, "accounted": c["read"] == c["written"] + c["quarantined"]
        and c["quarantined"] == expected_quarantine,
        "seconds": round(seconds, 1), "images_per_s": round(c["read"] / seconds, 1),
        "images_per_s_per_core": round(c["read"] / seconds / cores, 1), "cores": cores,
        "peak_driver_rss_mib": round(peaks["driver"] / 2**20), "peak_tree_rss_mib": round(peaks["tree"] / 2**20),
        "quarantine_reasons": {r: sum(1 for q in manifest["quarantine"] if q["reason"] == r)
                               for r in sorted({q["reason"] for q in manifest["quarantine"]})},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
