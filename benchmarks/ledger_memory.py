"""Memory of one ledger shard per committed URI: seeded from parts, then after a resume's skips.

    python benchmarks/ledger_memory.py --uris 2000000                 # this checkout
    python benchmarks/ledger_memory.py --uris 2000000 --revision REV  # curate/io/ledger.py of REV

The URI and key strings are made before the baseline is taken, so the figure is the ledger's own
structures (an actor also holds its own copy of each string).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]


def load_ledger(revision: str | None):
    if revision is None:
        sys.path.insert(0, str(REPO))
        import curate.io.ledger as module

        return module
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:curate/io/ledger.py"], check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "ledger_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("ledger_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uris", type=int, default=2_000_000)
    parser.add_argument("--revision", help="measure curate/io/ledger.py of this git revision")
    args = parser.parse_args()
    module = load_ledger(args.revision)
    n = args.uris
    uris = [f"/data/photos/{i // 10000:05d}/img{i:09d}.jpg" for i in range(n)]
    keys = [f"{i:020x}" for i in range(n)]
    gc.collect()
    base = rss_bytes()
    ledger = module.Ledger()
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        ledger.seed(pa.table({"uri": uris[start:stop], "status": ["written"] * (stop - start),
                              "key": keys[start:stop]}))
    seeded = rss_bytes()
    for start in range(0, n, 4096):
        ledger.skip(uris[start:start + 4096], list(range(start, min(n, start + 4096))))
    skipped = rss_bytes()
    print(f"{args.revision or 'checkout'}: {n} URIs, bytes per URI seeded {(seeded - base) / n:.0f}, "
          f"after the skips {(skipped - base) / n:.0f} (skipped {ledger.n_skipped})")


if __name__ == "__main__":
    main()
