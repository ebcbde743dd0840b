"""The commands and processes the bench runs: starting and stopping them, and the CPU time and
memory they use; the bench's log line and its error."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    return subprocess.run([str(a) for a in args], text=True, **kwargs)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """Time the processes' threads have run on a CPU (user and kernel), from
    /proc/<pid>/task/*/schedstat: in nanoseconds, where utime + stime count 10 ms clock ticks."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, ended ones included: its threads' time
    on a CPU (schedstat, nanoseconds), the cutime + cstime of the children it has waited for
    (recycled gunicorn workers, ended Postgres backends; clock ticks), and the same for each
    child still alive."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = cpu_seconds([pid])
    except OSError:  # ended in the meantime: its parent's cutime has it now
        return 0.0
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    return own + reaped + sum(tree_cpu_seconds(child) for child in children_of(pid))


class CpuMeter:
    """CPU seconds each server (its whole process tree) spends during a measured period:
    divided by the requests answered, the CPU cost of a request by component. It moves less
    than req/s when other work on the machine takes CPU away from the stack, but it moves
    (tools/bench/README.md records by how much)."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self._before: dict[str, float] = {}

    def track(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def start(self) -> None:
        self._before = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}

    def per_request_ms(self, requests: int) -> dict[str, float]:
        used = {name: tree_cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        return {name: round(cpu * 1000 / max(requests, 1), 3) for name, cpu in used.items()}


def memory_mb(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)[1])
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)[1])
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024}
