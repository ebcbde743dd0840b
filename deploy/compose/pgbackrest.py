#!/usr/bin/env python3
"""pgBackRest for the Compose stack: the pgbackrest service's base backups, and restores.

    flaskstack-pgbackrest schedule        create the stanza, then take a full backup when the newest
                                          full one is BACKUP_FULL_EVERY_HOURS old (or there is none)
                                          and a differential one when the newest backup is
                                          BACKUP_DIFF_EVERY_HOURS old; forever (the service)
    flaskstack-pgbackrest health          exit 1 unless the last backup attempt succeeded
    flaskstack-pgbackrest list            the repository: backups, recovery window
    flaskstack-pgbackrest restore [--time T]
                                          into the postgres-data volume, with Postgres stopped:
                                          the state just before T (with its zone), or the newest
                                          archived write; Postgres replays the WAL when it starts

pgBackRest itself reads its settings from the PGBACKREST_* variables docker-compose.yml sets from
.env (repository, encryption, stanza, data directory). Backups are due by age, not at clock times,
so one missed while the stack was down is taken when it starts again. Standard library only: it
runs in the postgres image, which has no virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

PGDATA = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))
SOCKET_DIR = os.environ.get("PGBACKREST_PG1_SOCKET_PATH", "/var/run/postgresql")
STATE = Path(os.environ.get("BACKUP_STATE_FILE", "/tmp/flaskstack-pgbackrest.json"))  # noqa: S108
HOUR = 3600
PGBACKREST = "/usr/bin/pgbackrest"  # Debian's package, in the official image's distribution too


def log(message: str) -> None:
    print(f"flaskstack-pgbackrest: {message}", flush=True)


def pgbackrest(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([PGBACKREST, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"pgbackrest {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def hours(name: str, default: float) -> float:
    value = os.environ.get(name) or default
    try:
        seconds = float(value) * HOUR
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number of hours") from None
    if seconds <= 0:
        raise SystemExit(f"{name} must be more than 0 hours")
    return seconds


def due_backup(info: dict, now: float, full_every: float, diff_every: float) -> str | None:
    """The backup type due now, from `pgbackrest info --output=json`'s stanza: full when there is
    none or the newest is full_every old, diff when the newest of any type is diff_every old."""
    backups = info.get("backup", [])
    fulls = [b["timestamp"]["stop"] for b in backups if b["type"] == "full"]
    if not fulls or now - max(fulls) >= full_every:
        return "full"
    if now - max(b["timestamp"]["stop"] for b in backups) >= diff_every:
        return "diff"
    return None


def stanza_info() -> dict:
    return json.loads(pgbackrest("--output=json", "info").stdout)[0]


def record(outcome: str, detail: str) -> None:
    temporary = STATE.with_suffix(".tmp")
    temporary.write_text(json.dumps({"outcome": outcome, "detail": detail, "time": time.time()}))
    temporary.replace(STATE)


def postgres_answers() -> bool:
    ready = ["pg_isready", "--quiet", "--host", SOCKET_DIR]
    return subprocess.run(ready, check=False).returncode == 0


def schedule(args: argparse.Namespace) -> int:
    full_every = hours("BACKUP_FULL_EVERY_HOURS", 168)
    diff_every = hours("BACKUP_DIFF_EVERY_HOURS", 24)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while not postgres_answers():
        log("waiting for Postgres")
        time.sleep(2)
    # Idempotent: creates the stanza once, then checks that the cluster is still the one the
    # repository holds (a new, empty cluster is not: restore it first).
    created = pgbackrest("stanza-create", check=False)
    if created.returncode != 0:
        record("failed", created.stderr.strip())
        log(f"the repository cannot take this cluster's backups: {created.stderr.strip()}")
        log("a new, empty data volume? restore it: docker compose run --rm pgbackrest restore")
    while created.returncode == 0:
        try:
            kind = due_backup(stanza_info(), time.time(), full_every, diff_every)
            if kind:
                log(f"{kind} backup")
                started = time.monotonic()
                pgbackrest(f"--type={kind}", "backup")
                record("ok", f"{kind} backup in {time.monotonic() - started:.0f} s")
                log(f"{kind} backup done in {time.monotonic() - started:.0f} s")
            elif not STATE.exists():
                record("ok", "no backup due")
        except (RuntimeError, ValueError, KeyError, IndexError) as error:
            record("failed", str(error))
            log(str(error))
        time.sleep(args.interval)
    # Stay up (and unhealthy) rather than restart in a loop: the logs say what to do.
    while True:
        time.sleep(HOUR)


def health(_: argparse.Namespace) -> int:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        print("no backup attempt yet")
        return 1
    print(f"last backup attempt: {state['outcome']}: {state['detail']}")
    return 0 if state["outcome"] == "ok" else 1


def list_repository(_: argparse.Namespace) -> int:
    return subprocess.run([PGBACKREST, "info"], check=False).returncode


def verify() -> None:
    """pgbackrest verify reads every backup file and WAL segment; it exits 0 even when it finds
    damage, which its report says ("status: error")."""
    result = pgbackrest("--output=text", "--log-level-console=warn", "verify", check=False)
    report = result.stdout + result.stderr
    if result.returncode != 0 or "status: error" in report or "invalid result" in report:
        raise SystemExit(
            f"pgbackrest verify found a damaged repository, nothing was restored:\n{report}"
        )
    log("pgbackrest verify: the repository's backups and WAL are intact")


def restore(args: argparse.Namespace) -> int:
    if postgres_answers() or (PGDATA / "postmaster.pid").exists():
        raise SystemExit(
            "Postgres is running (or did not stop cleanly): stop it first "
            "(docker compose stop pgbackrest postgres)"
        )
    verify()
    target = []
    if args.time:
        # The state just before the time: a transaction that committed at it is not restored.
        target = [
            "--type=time",
            f"--target={args.time}",
            "--target-exclusive",
            "--target-action=promote",
        ]
    started = time.monotonic()
    # --delta rewrites only the files that differ; into an empty volume it restores them all.
    pgbackrest("--delta", *target, "restore")
    what = f"the state just before {args.time}" if args.time else "the newest archived write"
    log(
        f"restored {what} into {PGDATA} in {time.monotonic() - started:.0f} s; Postgres replays "
        "the WAL and opens when it starts: docker compose up -d --wait"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("schedule", help="take the base backups when they are due")
    run.add_argument("--interval", type=float, default=60, help="seconds between checks")
    run.set_defaults(handler=schedule)
    commands.add_parser("health", help="exit 1 unless the last attempt succeeded").set_defaults(
        handler=health
    )
    commands.add_parser("list", help="the repository's backups").set_defaults(
        handler=list_repository
    )
    back = commands.add_parser("restore", help="restore into the data volume (Postgres stopped)")
    back.add_argument("--time", help="e.g. '2026-12-02 10:14:00+00' (the zone is required)")
    back.set_defaults(handler=restore)
    args = parser.parse_args()
    if getattr(args, "time", None) and not re.search(r"(Z|[+-]\d\d(:?\d\d)?)$", args.time):
        parser.error(f"--time {args.time!r} needs its time zone, e.g. '{args.time}+00'")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
