"""The GPU's and the machine's busy shares sampled while a benchmark runs (NVML and psutil, on a thread).

Without pynvml or psutil the sampler records nothing and its summary says so (``samples``: 0).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class GpuSampler:
    """The GPU's utilisation (NVML: share of time a kernel ran) and the machine's CPU busy share
    (psutil, all cores) sampled every ``every`` seconds on a thread while the run goes.

    ``save_to``: the summary so far is written there every ``save_every_s`` seconds and at the end,
    so a run whose machine is lost before it ends still leaves its measured part (a 5,000-image
    run on a lent machine was, benchmarks/RESULTS.md)."""

    def __init__(self, every: float = 0.25, save_to: Path | None = None, save_every_s: float = 30.0):
        import threading

        self.every, self.samples, self.cpu, self.host_gib = every, [], [], []
        self.save_to, self.save_every_s = save_to, save_every_s
        self.process_peaks: dict[str, float] = {}  # "pid name" -> peak GiB: which actors hold the memory
        self.names: dict[int, str] = {}  # pid -> "pid name"
        self.sm: dict[int, list[int]] = {}  # pid -> [sum of SM-busy %, samples] from NVML's per-process samples
        self.last_process_sample = 0  # NVML's microsecond timestamp of the newest one read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            import psutil
            import pynvml
        except ImportError:
            return
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        start = saved = time.perf_counter()
        psutil.cpu_percent()  # the first call only starts the count
        while not self._stop.wait(self.every):
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            self.samples.append((time.perf_counter() - start, rates.gpu, memory.used / 2**30))
            self.cpu.append(psutil.cpu_percent())
            self.host_gib.append(psutil.virtual_memory().used / 2**30)
            self._sample_processes(pynvml, handle, psutil)
            if len(self.samples) % 4 == 0:  # NVML keeps a buffer of per-process samples: read it each second
                self._sample_process_utilisation(pynvml, handle)
            if self.save_to is not None and time.perf_counter() - saved >= self.save_every_s:
                self.save(partial=True)
                saved = time.perf_counter()

    def save(self, partial: bool) -> None:
        """The summary so far to ``save_to``, replaced whole (a reader never sees half a file)."""
        part = self.save_to.with_name(self.save_to.name + ".tmp")
        part.write_text(json.dumps({**self.summary(), "partial": partial}, indent=2))
        os.replace(part, self.save_to)

    def _sample_processes(self, pynvml, handle, psutil) -> None:
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            try:
                name = psutil.Process(proc.pid).cmdline()[0][:80]  # Ray names its workers by their actor class
            except (psutil.Error, IndexError):
                name = "?"
            key = self.names[proc.pid] = f"{proc.pid} {name}"
            gib = (proc.usedGpuMemory or 0) / 2**30
            self.process_peaks[key] = max(self.process_peaks.get(key, 0.0), gib)

    def _sample_process_utilisation(self, pynvml, handle) -> None:
        """Which process kept the GPU busy: NVML's per-process SM utilisation samples since the last read
        (a driver without them, or no new sample, adds nothing)."""
        try:
            samples = pynvml.nvmlDeviceGetProcessUtilization(handle, self.last_process_sample)
        except pynvml.NVMLError:
            return
        for sample in samples:
            if sample.timeStamp <= self.last_process_sample:
                continue
            tally = self.sm.setdefault(sample.pid, [0, 0])
            tally[0] += sample.smUtil
            tally[1] += 1
        self.last_process_sample = max([self.last_process_sample, *(sample.timeStamp for sample in samples)])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.save_to is not None:
            self.save(partial=False)

    def summary(self) -> dict:
        """Busy share over the whole run and over the span from the first to the last busy sample
        (Ray start-up and model loading excluded)."""
        if not self.samples:
            return {"samples": 0}
        busy = [i for i, (_, util, _) in enumerate(self.samples) if util > 0]
        span = self.samples[busy[0]:busy[-1] + 1] if busy else []
        return {"samples": len(self.samples), "every_s": self.every,
                "busy_share_whole_run": round(sum(u for _, u, _ in self.samples) / 100 / len(self.samples), 3),
                "busy_share_while_working": round(sum(u for _, u, _ in span) / 100 / max(1, len(span)), 3),
                "working_span_s": round(span[-1][0] - span[0][0], 1) if span else 0,
                # fill, steady state and drain of a run: the busy share of each 30 s from the start
                "busy_share_by_30s": busy_share_by_window([(t, u) for t, u, _ in self.samples], 30.0),
                "cpu_busy_share_while_working": (round(sum(self.cpu[busy[0]:busy[-1] + 1]) / 100 / len(span), 3)
                                                 if span else None),
                "seconds": round(self.samples[-1][0], 1),
                "peak_memory_gib": round(max(m for _, _, m in self.samples), 1),
                "peak_host_memory_gib": round(max(self.host_gib), 1) if self.host_gib else None,
                "peak_memory_gib_by_process": {k: round(v, 1) for k, v in sorted(self.process_peaks.items())},
                # mean SM-busy share over the NVML samples that named the process (not a share of the run)
                "sm_busy_by_process": {self.names.get(pid, str(pid)): {"mean": round(total / 100 / n, 3), "samples": n}
                                       for pid, (total, n) in sorted(self.sm.items()) if n}}


def busy_share_by_window(samples: list[tuple[float, float]], window: float) -> list[float]:
    """Mean busy share (utilisation percent / 100) of the (seconds, percent) samples in each
    ``window`` seconds from 0; a window without samples is left out."""
    windows: dict[int, list[float]] = {}
    for seconds, percent in samples:
        windows.setdefault(int(seconds // window), []).append(percent)
    return [round(sum(v) / 100 / len(v), 3) for _, v in sorted(windows.items())]

