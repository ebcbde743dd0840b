"""The Compose scheduler (deploy/scheduler.py): an app's [[scheduled]] jobs at the times systemd's
own calendar parser gives, one at a time, a failed run reported by its healthcheck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEDULER = ROOT / "deploy" / "scheduler.py"

MANIFEST = """
[app]
files = ["app"]
wsgi = "app:app"

[[scheduled]]
name = "tick"
command = "sh -c 'echo start $(date +%s.%N) >> runs; sleep 1.5; echo end $(date +%s.%N) >> runs'"
on_calendar = "*:*:*"

[[scheduled]]
name = "broken"
command = "sh -c 'echo broken >> runs; exit 3'"
on_calendar = "*:*:0/2"
"""


def scheduler(directory: Path, state: Path, *args: str, **kwargs):
    env = {**os.environ, "SCHEDULER_STATE_DIR": str(state)}
    return subprocess.Popen(
        [sys.executable, str(SCHEDULER), *args], cwd=directory, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs,
    )  # fmt: skip


def check(directory: Path, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCHEDULER_STATE_DIR": str(state)}
    return subprocess.run(
        [sys.executable, str(SCHEDULER), "check"], cwd=directory, env=env,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_jobs_run_at_their_times_one_at_a_time_and_a_failure_shows(tmp_path):
    (tmp_path / "flaskstack.toml").write_text(MANIFEST)
    state = tmp_path / "state"
    assert check(tmp_path, state).returncode == 0, "nothing ran, nothing failed"

    process = scheduler(tmp_path, state)
    time.sleep(7)
    stopped = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    print(output)
    assert time.monotonic() - stopped < 5, "SIGTERM stops the scheduler at once"
    assert "tick: next run" in output and "broken: next run" in output

    runs = [line.split()[0] for line in (tmp_path / "runs").read_text().splitlines()]
    print(runs)
    assert runs.count("end") >= 2 and "broken" in runs, runs
    # Never two at once: each start of tick is followed by its end (the last may have been cut
    # short by the SIGTERM), never by another run.
    assert all(after == "end" for kind, after in pairwise(runs) if kind == "start"), runs

    failed = check(tmp_path, state)
    assert failed.returncode == 1
    failures = dict(line.split(": last run failed at ") for line in failed.stderr.splitlines())
    assert failures["broken"].endswith("exit status 3"), failures
    # tick only fails when the stop's SIGTERM, passed on to a run, cut it short.
    assert failures.get("tick", "exit status -15").endswith("exit status -15"), failures


def test_the_next_run_comes_from_systemds_calendar():
    sys.path.insert(0, str(SCHEDULER.parent))
    try:
        import scheduler as module  # deploy/ is not a package: its scripts import each other
    finally:
        sys.path.remove(str(SCHEDULER.parent))
    base = datetime(2026, 12, 4, 10, 15, 30, tzinfo=UTC)
    assert module.next_elapse("daily", base) == datetime(2026, 12, 5, tzinfo=UTC)
    assert module.next_elapse("*-*-* 03:30:00", base) == datetime(2026, 12, 5, 3, 30, tzinfo=UTC)
    assert module.next_elapse("hourly", base) == datetime(2026, 12, 4, 11, tzinfo=UTC)
