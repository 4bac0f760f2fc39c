"""A local output on a cluster whose nodes do not share it: a worker node runs in a mount namespace
of its own, where the output's folder is an empty tmpfs (as a second machine's own disk would be).
The run is refused before a shard is written, naming the node; writing through the driver's node
(`output.writers: stream`), one of the ways out the refusal names, gives the single-node corpus."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.test_cluster import (
    HEAD_IP,
    LOOPBACK_ENV,
    canonical,
    free_port,
    kill_node,
    single_node_corpus,  # noqa: F401  (fixture)
    start_node,
    wait_for_nodes,
)
from tests.e2e.test_local_pipeline import pipeline_yaml

pytestmark = pytest.mark.slow

WORKER_IP = "127.0.0.3"


def private_mount_works() -> bool:
    unshare = shutil.which("unshare")
    return bool(unshare) and subprocess.run([unshare, "--mount", "--propagation", "private", "true"],
                                            capture_output=True).returncode == 0


def hidden_from_the_worker(folder: Path) -> tuple[str, ...]:
    """A wrapper that starts its command in a mount namespace of its own with an empty tmpfs over ``folder``."""
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs curate-test "$0" && exec "$@"', str(folder))


@pytest.mark.skipif(not private_mount_works(), reason="needs unshare --mount (root or user namespaces)")
def test_a_local_output_that_a_node_does_not_see_is_refused_naming_it(tmp_path_factory, sample_dir,
                                                                     single_node_corpus):  # noqa: F811
    tmp = tmp_path_factory.mktemp("unshared")
    hidden = tmp / "hidden"
    hidden.mkdir()
    port = free_port()
    address = f"{HEAD_IP}:{port}"
    head = start_node(["--head", f"--port={port}", "--include-dashboard=false"], tmp, "head", HEAD_IP, LOOPBACK_ENV)
    worker = None
    try:
        wait_for_nodes(address, 1)
        worker = start_node([f"--address={address}"], tmp, "worker", WORKER_IP, LOOPBACK_ENV,
                            wrapper=hidden_from_the_worker(hidden))
        wait_for_nodes(address, 2)
        path = pipeline_yaml(tmp, [{"type": "dir", "path": str(sample_dir)}], hidden / "out")

        def run(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "curate.cli", "run", str(path), "--address", address,
                                   "--set", f"ray.node_ip_address={HEAD_IP}", *extra], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=LOOPBACK_ENV, timeout=600)

        refused = run()
        assert refused.returncode == 2, refused.stdout[-3000:]
        said = " ".join(refused.stdout.split())
        assert f"1 of its 2 nodes do not see what the driver wrote there ({WORKER_IP}: no such file)" in said, said
        assert not list((hidden / "out").glob("shards/*.tar")), "a shard was written before the refusal"
        written = run("--set", "output.writers=stream")
        assert written.returncode == 0, written.stdout[-3000:]
        assert canonical(hidden / "out") == single_node_corpus
    finally:
        for proc in [worker, head]:
            if proc is not None:
                kill_node(proc)
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip() == address:
            current.unlink()
