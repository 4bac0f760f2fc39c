"""The benchmarks' GPU sampler, over stand-ins for NVML and psutil (no GPU here)."""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace

from benchmarks.gpu_sampling import GpuSampler


def fake_nvml(utilisation: list[int]):
    readings = iter(utilisation)
    return SimpleNamespace(
        NVMLError=RuntimeError, nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=next(readings, 0)),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 * 2**30),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [],
        nvmlDeviceGetProcessUtilization=lambda h, since: [])


def test_the_summary_so_far_is_on_disk_while_the_run_goes(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([0, 100, 100, 50] + [100] * 1000))
    monkeypatch.setitem(sys.modules, "psutil", SimpleNamespace(
        cpu_percent=lambda: 25.0, virtual_memory=lambda: SimpleNamespace(used=5 * 2**30)))
    saved = tmp_path / "gpu.json"
    with GpuSampler(every=0.005, save_to=saved, save_every_s=0.02) as sampler:
        deadline = time.monotonic() + 10
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        during = json.loads(saved.read_text())  # written before the run ended
    assert during["partial"] is True and during["samples"] >= 2 and during["peak_memory_gib"] == 3.0
    final = json.loads(saved.read_text())
    assert final["partial"] is False and final["samples"] == len(sampler.samples) >= during["samples"]
    assert final["peak_host_memory_gib"] == 5.0 and 0 < final["busy_share_whole_run"] <= 1
    assert not list(tmp_path.glob("*.tmp"))
