#!/usr/bin/env python3
"""The app's scheduled jobs ([[scheduled]] in flaskstack.toml) in Compose: what the systemd
timers of roles/app/tasks/schedule.yml do on the Ansible hosts, in one container.

    scheduler.py [DIR]          run each job at its on_calendar times, one job at a time
    scheduler.py check [DIR]    exit 1 if the last run of a job failed (the healthcheck)

The times come from systemd's own calendar parser (`systemd-analyze calendar`), so a job's
on_calendar means the same here as on the hosts. Jobs run one after the other, never two at
once; one due while another runs starts when it ends. SIGTERM stops the scheduler at once, or,
during a run, is passed on to the job and stops the scheduler when the job ends. Unlike a
timer with Persistent=true, a run missed while the container was down is not made up. Each run
logs its start, end and exit status; a failed run marks the job failed (see check) until its
next run succeeds.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import manifest

STATE_DIR = Path(os.environ.get("SCHEDULER_STATE_DIR", "/tmp/flaskstack-scheduler"))  # noqa: S108
NEXT_ELAPSE = re.compile(r"Next elapse: \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def log(message: str) -> None:
    print(f"flaskstack-scheduler: {message}", flush=True)


def next_elapse(on_calendar: str, after: datetime) -> datetime:
    """The first time after `after` that the calendar event elapses (systemd.time(7))."""
    result = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=1",  # noqa: S607 - wherever the image has it
         f"--base-time=@{int(after.timestamp())}", on_calendar],
        env={**os.environ, "TZ": "UTC"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = NEXT_ELAPSE.search(result.stdout)
    if result.returncode != 0 or not found:
        raise ValueError(f"systemd-analyze cannot use {on_calendar!r}: {result.stderr.strip()}")
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


class Stop:
    """SIGTERM: exit at once when idle; pass it on to a running job and exit when it ends."""

    job: subprocess.Popen | None = None
    requested = False

    @classmethod
    def handle(cls, *_: object) -> None:
        cls.requested = True
        if cls.job is None:
            sys.exit(143)
        cls.job.send_signal(signal.SIGTERM)


def run_job(job: dict[str, str], directory: Path) -> int:
    started = time.monotonic()
    log(f"{job['name']}: running {job['command']}")
    Stop.job = subprocess.Popen(shlex.split(job["command"]), cwd=directory)
    status = Stop.job.wait()
    Stop.job = None
    log(f"{job['name']}: exit status {status} after {time.monotonic() - started:.1f} s")
    failed = STATE_DIR / f"{job['name']}.failed"
    if status == 0:
        failed.unlink(missing_ok=True)
    else:
        failed.write_text(f"{datetime.now(UTC).isoformat()} exit status {status}\n")
    if Stop.requested:
        sys.exit(143)
    return status


def schedule(directory: Path) -> int:
    jobs = manifest.load(directory)["scheduled"]
    if not jobs:
        log("the app declares no scheduled jobs; idle")
        signal.pause()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    due = {job["name"]: next_elapse(job["on_calendar"], now) for job in jobs}
    for job in jobs:
        when = f"{due[job['name']]:%Y-%m-%d %H:%M:%S} UTC"
        log(f"{job['name']}: next run {when} ({job['on_calendar']})")
    while True:
        job = min(jobs, key=lambda j: due[j["name"]])
        wait = (due[job["name"]] - datetime.now(UTC)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        run_job(job, directory)
        # The next elapse after now: runs missed while this one ran are not repeated.
        due[job["name"]] = next_elapse(job["on_calendar"], datetime.now(UTC))


def check() -> int:
    failed = sorted(STATE_DIR.glob("*.failed"))
    for path in failed:
        print(f"{path.stem}: last run failed at {path.read_text().strip()}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        return check()
    # PID 1 in a container gets no default action for SIGTERM: handle it.
    signal.signal(signal.SIGTERM, Stop.handle)
    return schedule(Path(argv[0] if argv else "."))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
