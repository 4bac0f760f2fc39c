"""One writer per output: an exclusive lock on ``OUT/.curate/lock`` with its owner and a heartbeat.

The kernel's ``flock`` does the locking on one host and is released when the holder dies (SIGKILL
included), so a killed run's lock is taken over by the next run at once. The file's content names
the holder (host, pid, run id, start) for the error message, and a heartbeat thread rewrites it
every ``heartbeat_s`` seconds: on a shared filesystem whose ``flock`` does not reach other hosts, a
fresh heartbeat from another host still refuses the second run, and one older than ``stale_s`` is
a dead run's, taken over with a warning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid

log = logging.getLogger("curate")


class OutputLocked(RuntimeError):
    """Another run is writing to this output."""


def describe_holder(holder: dict) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    return (f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started_at', '?')}, last heartbeat {age:.0f} s ago)")


class OutputLock:
    def __init__(self, path, heartbeat_s: float = 10.0, stale_s: float = 120.0):
        self.path = path
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self.run_id = uuid.uuid4().hex[:12]
        self.took_over: dict | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLocked(self._busy_message(holder)) from None
        holder = _read_holder(fd)
        if holder.get("held"):
            fresh = time.time() - float(holder.get("heartbeat", 0)) < self.stale_s
            if fresh and holder.get("host") != socket.gethostname():
                os.close(fd)  # another host's live run on a filesystem that does not share flock
                raise OutputLocked(self._busy_message(holder))
            self.took_over = holder
            log.warning("%s: taking over the lock of a run that stopped without releasing it: %s",
                        self.path.parent.parent, describe_holder(holder))
        self._fd = fd
        self._write(held=True)
        self._thread = threading.Thread(target=self._beat, daemon=True, name="curate-lock-heartbeat")
        self._thread.start()
        return self

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop_heartbeat()
        try:
            self._write(held=False)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def abandon(self) -> None:
        """Let go the way a killed process does: the flock goes, the file still says "held"."""
        if self._fd is None:
            return
        self._stop_heartbeat()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy_message(self, holder: dict) -> str:
        who = describe_holder(holder) if holder else "another process"
        return (f"{self.path.parent.parent}: another curate run is writing to this output: {who}. "
                "Wait for it to finish or stop it, or choose another --output; nothing was changed.")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write(held=True)
            except OSError as e:  # a full disk must not kill the run; the flock still holds
                log.warning("lock heartbeat not written: %s", e)

    def _holder(self, held: bool) -> dict:
        return {"held": held, "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                "started_at": self._started_at, "heartbeat": time.time()}

    def _write(self, held: bool) -> None:
        data = json.dumps(self._holder(held)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ObjectLock(OutputLock):
    """The same lock on object storage, which has no flock: the lock object names its holder and a
    heartbeat keeps it fresh. A fresh lock of another live run refuses; one whose holder is gone (its
    pid is dead on this host, or no heartbeat for ``stale_s`` from another host) is taken over. After
    writing, the lock is read back once a moment later, so of two runs starting together one gives way."""

    settle_s = 0.3

    def acquire(self) -> ObjectLock:
        holder = self._read()
        if holder.get("held") and holder.get("run_id") != self.run_id:
            if self._holder_alive(holder):
                raise OutputLocked(self._busy_message(holder))
            self.took_over = holder
            log.warning("%s: taking over the lock of a run that stopped without releasing it: %s",
                        self.path.parent.parent, describe_holder(holder))
        self._fd = -1  # held
        self._write(held=True)
        time.sleep(self.settle_s)
        winner = self._read()
        if winner.get("run_id") != self.run_id:
            self._fd = None
            raise OutputLocked(self._busy_message(winner))
        self._thread = threading.Thread(target=self._beat, daemon=True, name="curate-lock-heartbeat")
        self._thread.start()
        return self

    def _holder_alive(self, holder: dict) -> bool:
        if time.time() - float(holder.get("heartbeat", 0)) >= self.stale_s:
            return False
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return _pid_alive(holder["pid"])
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop_heartbeat()
        try:
            if self._read().get("run_id") == self.run_id:
                self._write(held=False)
        finally:
            self._fd = None

    def abandon(self) -> None:
        if self._fd is None:
            return
        self._stop_heartbeat()
        self._fd = None

    def _read(self) -> dict:
        try:
            holder = json.loads(self.path.read_bytes() or b"{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _write(self, held: bool) -> None:
        self.path.write_bytes(json.dumps(self._holder(held)).encode())


def lock_for(path) -> OutputLock:
    """flock for a local output, the heartbeat object for object storage."""
    from curate.io.objpath import ObjectPath

    return ObjectLock(path) if isinstance(path, ObjectPath) else OutputLock(path)
