"""Case 2: one writer per output. A second run is refused and told who holds the output; a killed
run's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from curate.io.corpus import CorpusWriter
from curate.io.lock import OutputLock, OutputLocked
from tests.conftest import REPO
from tests.io.test_corpus import ok_row
from tests.safety.conftest import load, parts_rows

HOLDER = """
import sys, time
from curate.config import load_config
from curate.io.corpus import CorpusWriter
cfg = load_config(sys.argv[1])
writer = CorpusWriter(cfg.output.path, cfg).open()
print("holding", flush=True)
time.sleep(600)
"""


def test_case2_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "out")
    first = CorpusWriter(cfg.output.path, cfg).open()
    first.add(ok_row(0))
    busy = rf"another curate run is writing to this output: run \w+ \(pid {os.getpid()} on "
    with pytest.raises(OutputLocked, match=busy):
        CorpusWriter(cfg.output.path, cfg).open()
    first.add(ok_row(1))
    first.finish()
    # Once the first has finished, the output is free again.
    CorpusWriter(cfg.output.path, cfg).open().finish()
    assert sorted(r["uri"] for r in parts_rows(tmp_path / "out")) == ["/in/0.png", "/in/1.png"]


def test_case2_another_process_holds_the_lock_until_it_is_killed(tmp_path):
    path = tmp_path / "p.yaml"
    cfg = load(tmp_path, [{"type": "dir", "path": str(tmp_path / "in")}], tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(OutputLocked, match=f"pid {holder.pid} "):
            CorpusWriter(cfg.output.path, cfg).open()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed run's lock file still says "held"; the kernel released its flock, so it is taken over.
    assert json.loads((tmp_path / "out" / ".curate" / "lock").read_text())["held"] is True
    writer = CorpusWriter(cfg.output.path, cfg).open()
    assert writer.committer.lock.took_over["pid"] == holder.pid
    writer.finish()


def test_case2_a_fresh_heartbeat_from_another_host_refuses_and_a_stale_one_is_taken_over(tmp_path):
    path = tmp_path / ".curate" / "lock"
    path.parent.mkdir()
    other = {"held": True, "run_id": "abc", "host": "elsewhere", "pid": 1, "started_at": "x",
             "heartbeat": time.time()}
    path.write_text(json.dumps(other))
    with pytest.raises(OutputLocked, match="pid 1 on elsewhere"):
        OutputLock(path).acquire()
    path.write_text(json.dumps({**other, "heartbeat": time.time() - 3600}))
    lock = OutputLock(path).acquire()
    assert lock.took_over["host"] == "elsewhere"
    assert json.loads(path.read_text())["run_id"] == lock.run_id
    lock.release()
    assert json.loads(path.read_text())["held"] is False


def test_the_heartbeat_keeps_the_lock_file_fresh(tmp_path):
    lock = OutputLock(tmp_path / "lock", heartbeat_s=0.05).acquire()
    first = json.loads((tmp_path / "lock").read_text())["heartbeat"]
    deadline = time.monotonic() + 10
    while json.loads((tmp_path / "lock").read_text() or "{}").get("heartbeat", first) == first:
        assert time.monotonic() < deadline, "no heartbeat written"
        time.sleep(0.02)
    lock.release()
