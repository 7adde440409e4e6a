"""The servers under test as subprocesses, and what /proc says about them (CPU time, RSS, peak RSS)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may hold spaces: fields after it follow the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    result: list[int] = []
    todo = [pid]
    while todo:
        kids = _children(todo.pop())
        result += kids
        todo += kids
    return result


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds; 0 when it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in KiB."""
    result = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in result:
                result[key] = int(value.split()[0])
    except OSError:
        pass
    return result


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class Snapshot:
    at: float
    cpu: float  # seconds, the whole process tree
    rss_kib: dict[int, int]
    hwm_kib: dict[int, int]


class Server:
    """One server process (and the workers it forks), its log in a file."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.ready_s = float("nan")
        self._pids: list[int] = []
        self._log_offset = 0

    def start(self) -> None:
        log = self.log_path.open("ab")
        self._log_offset = log.tell()
        self.spawned_at = time.perf_counter()
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_ready(self, port: int, path: str, *, timeout: float = 120.0, workers: int = 1) -> float:
        """Seconds from spawn to the first 200 on ``path``; with ``workers``, also waits (not counted) until each
        worker has logged its start-up: a load that connects before then would give every connection to the
        workers already up (keep-alive connections stay where they were accepted)."""
        deadline = time.monotonic() + timeout
        ready = self._wait_status(port, path, deadline)
        while workers > 1 and self._started_workers() < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {workers} workers not started after {timeout}s; see {self.log_path}")
            time.sleep(0.01)
        self._pids = [self.pid, *descendants(self.pid)]
        return ready

    def _started_workers(self) -> int:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().count(b"Application startup complete.")

    def _wait_status(self, port: int, path: str, deadline: float) -> float:
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", path)
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    self.ready_s = time.perf_counter() - self.spawned_at
                    return self.ready_s
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready on :{port}{path}; see {self.log_path}")
            time.sleep(0.005)

    def pids(self) -> list[int]:
        return self._pids or [self.pid]

    def workers(self) -> list[int]:
        """The processes that serve requests: the forked workers when there are any, else the process itself."""
        kids = [p for p in self._pids[1:] if "resource_tracker" not in cmdline(p)]
        return kids or [self.pid]

    def snapshot(self) -> Snapshot:
        pids = self.pids()
        memory = {pid: memory_kib(pid) for pid in pids}
        return Snapshot(
            at=time.perf_counter(),
            cpu=sum(cpu_seconds(pid) for pid in pids),
            rss_kib={pid: m["VmRSS"] for pid, m in memory.items()},
            hwm_kib={pid: m["VmHWM"] for pid, m in memory.items()},
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (an orderly stop: the gateway flushes its usage records), SIGKILL after ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            for pid in self._pids[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return None
