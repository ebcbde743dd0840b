"""`--py-spy`: sample every gunicorn worker while a figure's load runs again, and sum the
samples up by package for the table (the collapsed stacks are kept for a flame graph)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tools.bench.processes import BenchError, stop


def frame_package(frame: str) -> str:
    """py-spy's "Class.function (package/module.py:line)" → the package (or template) it is in.
    py-spy writes paths relative to sys.path, so the first component names the package."""
    if frame.startswith("process "):
        return "(no Python frame: native code or the process itself)"
    location = frame.rsplit("(", 1)[-1].rstrip(")").rsplit(":", 1)[0]
    if location.endswith(".html"):
        return "templates (Jinja)"
    return location.split("/", 1)[0].removesuffix(".py")


def summarize_profile(collapsed: Path, top: int = 12) -> dict:
    """Self time by package, and the functions with the most inclusive time."""
    by_package: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # py-spy samples without stopping the workers: a frame it read while it changed may
        # hold a line break, which splits that stack over lines that end without a count.
        if not count.isdigit():
            continue
        frames = stack.split(";")
        samples = int(count)
        total += samples
        package = frame_package(frames[-1])
        by_package[package] = by_package.get(package, 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    if not total:
        raise BenchError(f"py-spy recorded no samples in {collapsed}")

    def share(counts: dict[str, int]) -> dict[str, float]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return {name: round(100 * samples / total, 1) for name, samples in ranked}

    return {
        "samples": total,
        "self_by_package_%": share(by_package),
        "inclusive_%": share(inclusive),
    }


def record_profile(
    py_spy: str, master: int, output: Path, duration: int, load: Callable[[], object]
) -> dict:
    """Sample gunicorn (`master` and its workers) for `duration` seconds while `load` runs;
    returns the summary of the collapsed stacks written to `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [py_spy, "record", "--pid", str(master), "--subprocesses", "--nonblocking",
         "--format", "raw", "--duration", str(duration), "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        load()
        recorder.wait(timeout=duration + 60)
    finally:
        stop(recorder, signal.SIGINT)
    return summarize_profile(output)
