"""Print what the off-host pgBackRest repository holds (`make backups`).

Reads the file ansible/backups.yml writes: `pgbackrest --output=json info` and Postgres'
pg_stat_archiver from the first db host. Exits 1 when the repository is not healthy: pgBackRest's
status is not ok, or the archiver's last attempt failed.

    python3 deploy/backups_report.py REPORT.json
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime


def when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def size(octets: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if octets < 1000 or unit == "GB":
            return f"{octets:.0f} {unit}" if unit == "B" else f"{octets:.1f} {unit}"
        octets /= 1000
    raise AssertionError("unreachable")


def report(data: dict) -> tuple[list[str], bool]:
    """The lines to print, and whether the repository is healthy."""
    archiver = data["archiver"]
    now = archiver["now"]
    lines = []
    healthy = True
    for stanza in data["repositories"]:
        status = stanza["status"]
        healthy &= status["code"] == 0
        lines.append(
            f"stanza {stanza['name']} ({stanza.get('cipher', 'none')}, from {data['host']}): "
            f"{status['message']}"
        )
        backups = stanza.get("backup", [])
        if backups:
            lines.append(
                f"  {'backup':<34} {'type':<5} {'started':<24} {'took':>6}"
                f" {'database':>10} {'stored':>10}"
            )
        for backup in backups:
            started, stopped = backup["timestamp"]["start"], backup["timestamp"]["stop"]
            lines.append(
                f"  {backup['label']:<34} {backup['type']:<5} {when(started):<24}"
                f" {stopped - started:>4} s {size(backup['info']['size']):>10}"
                f" {size(backup['info']['repository']['delta']):>10}"
            )
        if backups:
            newest = backups[-1]["timestamp"]["stop"]
            lines.append(f"  newest backup: finished {ago(now - newest)}")
        oldest_consistent = backups[0]["timestamp"]["stop"] if backups else None
        archived_at = archiver["last_archived_time"]
        if archived_at is not None:
            lines.append(
                f"  newest archived WAL: {archiver['last_archived_wal']}, {ago(now - archived_at)}"
            )
        failed_at = archiver["last_failed_time"]
        if failed_at is not None and (archived_at is None or failed_at > archived_at):
            healthy = False
            lines.append(
                f"  WAL ARCHIVING FAILING: {archiver['last_failed_wal']} failed"
                f" {ago(now - failed_at)} ({archiver['failed_count']} failures):"
                " see /var/log/pgbackrest and the Postgres log on the db host"
            )
        if oldest_consistent is not None and archived_at is not None:
            lines.append(
                f"  recovery window: {when(oldest_consistent)} to {when(max(archived_at, newest))}"
                " (make restore TIME=…)"
            )
    return lines, healthy


def main() -> int:
    with open(sys.argv[1]) as file:
        lines, healthy = report(json.load(file))
    print("\n".join(lines))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
