"""A real multi-node Ray cluster on this machine (head + 2 worker nodes on loopback addresses
127.0.0.2-4, one per node):
`curate run --address` gives the same corpus as a single-node run, also when a worker node is
SIGKILLed mid-run while the workers write to S3 (Ray Data retries the lost tasks and restarts the
lost actors; the loopback S3 server is moto's)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.config import load_config
from curate.pipeline import run_pipeline
from tests.conftest import REPO
from tests.e2e.test_local_pipeline import pipeline_yaml, records
from tests.io.s3 import S3_ENV, s3_bucket, s3_endpoint  # noqa: F401  (fixtures)

# whole pipelines through Ray (or subprocesses): minutes on two cores
pytestmark = pytest.mark.slow

RAY = shutil.which("ray", path=str(Path(sys.executable).parent))
# Ray rewrites 127.0.0.1 to the machine's interface address, but takes other loopback addresses as
# they are: each node gets its own 127.0.0.x, so all traffic stays on loopback. Ray's token
# authentication stays on, with a token made for this cluster.
HEAD_IP = "127.0.0.2"
LOOPBACK_ENV = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HEAD_IP, 0))
        return s.getsockname()[1]


def start_node(args: list[str], tmp: Path, name: str, ip: str, env: dict, wrapper: tuple[str, ...] = ()
               ) -> subprocess.Popen:
    """A Ray node in its own process group (`ray start --block`), so killing the group kills it all.
    It starts in a folder of its own: its workers' current directory is not the driver's, as on
    a cluster's machines. ``wrapper``: a command that runs ``ray start`` (its arguments follow)."""
    log = open(tmp / f"{name}.log", "w")
    return subprocess.Popen([*wrapper, RAY, "start", "--block", f"--node-ip-address={ip}", "--num-cpus=1",
                             "--disable-usage-stats", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env, cwd=tmp)


def kill_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_nodes(address: str, n: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    probe = ("import ray; ray.init(address=%r, _node_ip_address=%r, log_to_driver=False);"
             "print(len([x for x in ray.nodes() if x['Alive']]))" % (address, HEAD_IP))
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                             env=LOOPBACK_ENV)
        if out.stdout.strip().isdigit() and int(out.stdout.strip()) >= n:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} did not reach {n} nodes")


@pytest.fixture(scope="module")
def cluster_env(s3_endpoint) -> dict:  # noqa: F811
    """Every node and driver of the cluster can reach the loopback S3 server (Ray workers take the
    storage settings from their node's environment)."""
    return {**LOOPBACK_ENV, **S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cluster_env):
    tmp = tmp_path_factory.mktemp("cluster")
    port = free_port()
    address = f"{HEAD_IP}:{port}"
    head = start_node(["--head", f"--port={port}", "--include-dashboard=false"], tmp, "head", HEAD_IP, cluster_env)
    workers = []
    try:
        wait_for_nodes(address, 1)
        for i in range(2):  # one at a time: nodes starting together can race for the same free port
            workers.append(start_node([f"--address={address}"], tmp, f"worker{i}", f"127.0.0.{3 + i}",
                                      cluster_env))
            wait_for_nodes(address, 2 + i)
        yield address, workers
    finally:
        for proc in workers + [head]:
            kill_node(proc)
        # `ray start --head` records its address for later `ray.init()` calls; forget the dead cluster.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip() == address:
            current.unlink()


@pytest.fixture(scope="module")
def single_node_corpus(tmp_path_factory, sample_dir):
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "out"
    run_pipeline(load_config(pipeline_yaml(tmp, [{"type": "dir", "path": str(sample_dir)}], out)))
    return canonical(out)


def canonical(out) -> list[tuple]:
    """What must not depend on where the run ran: keys, regions and captions (not timings)."""
    return sorted((r["key"], r["kind"], repr([(g["box"], g.get("caption"), g.get("caption_skipped"))
                                               for g in r["regions"]])) for r in records(out))


def cluster_run(tmp: Path, sample_dir: Path, address: str, name: str, env: dict, out=None) -> subprocess.Popen:
    out = out or tmp / name
    path = pipeline_yaml(tmp, [{"type": "dir", "path": str(sample_dir)}], out)
    path = path.rename(tmp / f"{name}.yaml")
    return subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(path), "--address", address,
                             "--set", f"ray.node_ip_address={HEAD_IP}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_cluster_run_equals_single_node_run(cluster, cluster_env, single_node_corpus, sample_dir, tmp_path):
    address, _ = cluster
    proc = cluster_run(tmp_path, sample_dir, address, "cluster", cluster_env)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert canonical(tmp_path / "cluster") == single_node_corpus


def test_relative_paths_name_the_drivers_folders_on_every_node(cluster, cluster_env, single_node_corpus, sample_dir,
                                                               tmp_path):
    address, _ = cluster
    shutil.copytree(sample_dir, tmp_path / "photos")
    path = pipeline_yaml(tmp_path, [{"type": "dir", "path": "photos"}], Path("corpus"))
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", path.name, "--address", address,
                             "--set", f"ray.node_ip_address={HEAD_IP}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**cluster_env, "PYTHONPATH": str(REPO)})
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert "quarantined 0" in output, output[-3000:]  # every image read on the workers
    assert canonical(tmp_path / "corpus") == single_node_corpus


def test_killing_a_worker_node_mid_write_to_s3_loses_nothing(cluster, cluster_env, single_node_corpus, sample_dir,
                                                              tmp_path, s3_bucket):  # noqa: F811
    from curate.io.layout import OutputLayout

    address, workers = cluster
    uri = f"s3://{s3_bucket}/killed"
    proc = cluster_run(tmp_path, sample_dir, address, "killed", cluster_env, out=uri)
    deadline = time.monotonic() + 300
    while not OutputLayout.at(uri).part_files():  # wait for the first commit
        assert proc.poll() is None and time.monotonic() < deadline, "run ended or stalled before committing"
        time.sleep(0.1)
    kill_node(workers[0])  # its raylet and every worker process on it, uploads in flight included
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert canonical(uri) == single_node_corpus
    keys = [r["key"] for r in records(uri)]
    assert len(keys) == len(set(keys)), "a sample was written twice"
