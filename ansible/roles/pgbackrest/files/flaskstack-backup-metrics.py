#!/usr/bin/python3
"""Write the backups' health as Prometheus metrics, for node_exporter's textfile collector.

    flaskstack-backup-metrics --stanza S [--port 5432] [--output FILE.prom]
                              [--restore-check-marker FILE]

What pgBackRest's `info` says of the stanza (its status, the newest backup of each type, the
recovery window), the repository's size (`repo-ls`), Postgres' WAL archiver (pg_stat_archiver) and
when the weekly restore check last succeeded (its marker file's time). Alerts compute ages from the
*_timestamp_seconds metrics (time() - x).

A source that does not answer is a metric too (flaskstack_pgbackrest_source_up 0,
flaskstack_pgbackrest_scrape_success 0), not a stale file: the script exits 0 then, and says why on
stderr. The file is replaced atomically, so node_exporter never reads half of it. Runs as postgres
(its unit), or as root: pgBackRest and psql then run as postgres.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

PGBACKREST = "/usr/bin/pgbackrest"
PSQL = "/usr/bin/psql"
RUNUSER = "/usr/sbin/runuser"
PREFIX = "flaskstack_pgbackrest_"
BACKUP_TYPES = ("full", "diff", "incr")
SOURCES = ("info", "repo_ls", "postgres")
# A hung repository or cluster must not hold the unit: the source is reported down instead.
TIMEOUT = 50

# Every metric written, in the file's order: name (after PREFIX), type, help.
METRICS = {
    "scrape_success": (
        "gauge",
        "1 when pgBackRest's info, its repository listing and Postgres all answered, else 0.",
    ),
    "source_up": ("gauge", "1 when this source answered (info, repo_ls, postgres), else 0."),
    "stanza_status": (
        "gauge",
        "pgBackRest's stanza status code: 0 ok, 1 missing stanza path, 2 no valid backups,"
        " 3 missing stanza data, others errors.",
    ),
    "backups": ("gauge", "Backups of this type in the repository."),
    "last_backup_timestamp_seconds": (
        "gauge",
        "When the newest backup of this type finished, in seconds since the epoch.",
    ),
    "last_backup_duration_seconds": ("gauge", "How long the newest backup of this type took."),
    "last_backup_size_bytes": (
        "gauge",
        "The database's size as the newest backup of this type saw it.",
    ),
    "last_backup_repository_delta_bytes": (
        "gauge",
        "What the newest backup of this type added to the repository (compressed, encrypted).",
    ),
    "recovery_window_start_timestamp_seconds": (
        "gauge",
        "The earliest time a restore can reach: the end of the oldest backup.",
    ),
    "repository_size_bytes": (
        "gauge",
        "The stanza's files in the repository: its backups and its WAL archive.",
    ),
    "postgres_in_recovery": (
        "gauge",
        "1 when Postgres is in recovery (its archiver's metrics are then left out), else 0.",
    ),
    "archiver_last_archived_timestamp_seconds": (
        "gauge",
        "When Postgres last archived a WAL segment, in seconds since the epoch.",
    ),
    "archiver_last_failed_timestamp_seconds": (
        "gauge",
        "When Postgres' archive_command last failed, in seconds since the epoch.",
    ),
    "archiver_archived_total": ("counter", "WAL segments archived (pg_stat_archiver)."),
    "archiver_failed_total": ("counter", "Failed attempts to archive a WAL segment."),
    "restore_check_last_success_timestamp_seconds": (
        "gauge",
        "When the weekly restore check last succeeded, in seconds since the epoch.",
    ),
}

ARCHIVER_SQL = (
    "SELECT pg_is_in_recovery(), extract(epoch from last_archived_time),"
    " extract(epoch from last_failed_time), archived_count, failed_count FROM pg_stat_archiver"
)


class Sample(NamedTuple):
    name: str  # a key of METRICS
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class SourceError(Exception):
    pass


def sample(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, value, tuple(labels.items()))


# Reading the sources: pgBackRest and psql as postgres.


def is_postgres() -> bool:
    return os.geteuid() == pwd.getpwnam("postgres").pw_uid


def as_postgres(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv if is_postgres() else [RUNUSER, "-u", "postgres", "--", *argv],
        text=True, capture_output=True, timeout=TIMEOUT, cwd="/",
    )  # fmt: skip


def last_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error:" in line]  # pgBackRest, psql
    return (errors or lines or [f"exit status {result.returncode}"])[-1].strip()


def answer(argv: list[str]) -> str:
    """What the command printed, or SourceError saying why it did not answer."""
    try:
        result = as_postgres(argv)
    except subprocess.TimeoutExpired:
        raise SourceError(f"no answer in {TIMEOUT} s") from None
    except OSError as error:
        raise SourceError(str(error)) from None
    if result.returncode != 0:
        raise SourceError(last_error(result))
    return result.stdout


def decoded(text: str):
    try:
        return json.loads(text)
    except ValueError as error:
        raise SourceError(f"not JSON: {error}") from None


def read_info(stanza: str) -> list:
    return decoded(answer([PGBACKREST, f"--stanza={stanza}", "--output=json", "info"]))


def read_repo_ls(stanza: str, path: str) -> dict:
    return decoded(
        answer([PGBACKREST, f"--stanza={stanza}", "--output=json", "repo-ls", "--recurse", path])
    )


def read_archiver(port: int) -> str:
    return answer(
        [PSQL, "-h", "/run/postgresql", "-p", str(port), "-d", "postgres", "-AtX", "-F", "|",
         "-c", ARCHIVER_SQL]
    )  # fmt: skip


def marker_time(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# Parsing: the decoded JSON and psql's line into samples.


def stanza_entry(info: list, stanza: str) -> dict:
    """The stanza's entry in `info --output=json` (a list with one entry per stanza)."""
    for entry in info if isinstance(info, list) else []:
        if isinstance(entry, dict) and entry.get("name") == stanza:
            return entry
    raise SourceError(f"pgbackrest info does not list stanza {stanza}")


def started_stopped(backup: dict) -> tuple[int, int] | None:
    timestamp = backup.get("timestamp") or {}
    start, stop = timestamp.get("start"), timestamp.get("stop")
    if not isinstance(start, int | float) or not isinstance(stop, int | float):
        return None
    return start, stop


def newest_backup_samples(backup_type: str, backup: dict) -> list[Sample]:
    start, stop = started_stopped(backup)
    info = backup.get("info") or {}
    samples = [
        sample("last_backup_timestamp_seconds", stop, type=backup_type),
        sample("last_backup_duration_seconds", stop - start, type=backup_type),
    ]
    if isinstance(info.get("size"), int):
        samples.append(sample("last_backup_size_bytes", info["size"], type=backup_type))
    delta = (info.get("repository") or {}).get("delta")
    if isinstance(delta, int):
        samples.append(sample("last_backup_repository_delta_bytes", delta, type=backup_type))
    return samples


def info_samples(info: list, stanza: str) -> list[Sample]:
    """The stanza's status, the newest backup of each type and the recovery window's start."""
    entry = stanza_entry(info, stanza)
    code = (entry.get("status") or {}).get("code")
    if not isinstance(code, int):
        raise SourceError("pgbackrest info gives the stanza no status code")
    samples = [sample("stanza_status", code)]
    backups = [
        backup for backup in entry.get("backup") or []
        if isinstance(backup, dict) and started_stopped(backup)
    ]  # fmt: skip
    for backup_type in BACKUP_TYPES:
        of_type = [backup for backup in backups if backup.get("type") == backup_type]
        samples.append(sample("backups", len(of_type), type=backup_type))
        if of_type:
            newest = max(of_type, key=lambda backup: started_stopped(backup)[1])
            samples += newest_backup_samples(backup_type, newest)
    if backups:
        # A restore reaches no earlier than the oldest backup's end, its first consistent state.
        oldest = min(started_stopped(backup)[1] for backup in backups)
        samples.append(sample("recovery_window_start_timestamp_seconds", oldest))
    return samples


def listed_bytes(listing: dict) -> int:
    """The size of the files in a `repo-ls --output=json` listing: {name: {"type", "size", …}}."""
    if not isinstance(listing, dict):
        raise SourceError("pgbackrest repo-ls did not answer with an object")
    return sum(
        entry["size"] for entry in listing.values()
        if isinstance(entry, dict) and entry.get("type") == "file"
        and isinstance(entry.get("size"), int)
    )  # fmt: skip


def repository_samples(listings: list[dict]) -> list[Sample]:
    return [sample("repository_size_bytes", sum(listed_bytes(listing) for listing in listings))]


def archiver_samples(line: str) -> list[Sample]:
    """pg_stat_archiver as ARCHIVER_SQL gives it: 'f|1796383749.87|1796383700.1|9|0', NULL empty."""
    fields = line.strip().split("|")
    if len(fields) != 5 or fields[0] not in ("t", "f"):
        raise SourceError(f"unexpected answer from psql: {line.strip()!r}")
    in_recovery, archived_at, failed_at, archived, failed = fields
    if in_recovery == "t":
        return [sample("postgres_in_recovery", 1)]
    samples = [sample("postgres_in_recovery", 0)]
    for name, value, kind in (
        ("archiver_last_archived_timestamp_seconds", archived_at, float),
        ("archiver_last_failed_timestamp_seconds", failed_at, float),
        ("archiver_archived_total", archived, int),
        ("archiver_failed_total", failed, int),
    ):
        if value:
            try:
                samples.append(sample(name, kind(value)))
            except ValueError:
                raise SourceError(f"unexpected answer from psql: {line.strip()!r}") from None
    return samples


def restore_check_samples(mtime: float | None) -> list[Sample]:
    if mtime is None:
        return []
    return [sample("restore_check_last_success_timestamp_seconds", mtime)]


# The exposition text.


def escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def number(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def render(stanza: str, samples: list[Sample]) -> str:
    """Prometheus' text format: HELP and TYPE, then the samples, of each metric that has any."""
    unknown = {one.name for one in samples} - set(METRICS)
    if unknown:
        raise ValueError(f"metrics without a definition: {', '.join(sorted(unknown))}")
    lines = []
    for name, (kind, help_text) in METRICS.items():
        of_metric = [one for one in samples if one.name == name]
        if not of_metric:
            continue
        lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
        for one in of_metric:
            labels = ",".join(
                f'{label}="{escape(value)}"' for label, value in (("stanza", stanza), *one.labels)
            )
            lines.append(f"{PREFIX}{name}{{{labels}}} {number(one.value)}")
    return "\n".join(lines) + "\n"


# Putting it together.


def collect(stanza: str, port: int, marker: Path) -> list[Sample]:
    """Every source's samples, and whether each answered."""
    sources = {
        "info": lambda: info_samples(read_info(stanza), stanza),
        "repo_ls": lambda: repository_samples(
            [read_repo_ls(stanza, f"{area}/{stanza}") for area in ("archive", "backup")]
        ),
        "postgres": lambda: archiver_samples(read_archiver(port)),
    }
    samples, up = [], {}
    for source, read in sources.items():
        try:
            samples += read()
            up[source] = 1
        except SourceError as error:
            print(f"flaskstack-backup-metrics: {source}: {error}", file=sys.stderr)
            up[source] = 0
    return [
        sample("scrape_success", int(all(up.values()))),
        *(sample("source_up", up[source], source=source) for source in SOURCES),
        *samples,
        *restore_check_samples(marker_time(marker)),
    ]


def write_atomically(path: Path, text: str) -> None:
    """Replace the file at once: node_exporter reads the old one or the new one, never half."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True)
        path.parent.chmod(0o755)
    # Not *.prom: the textfile collector reads only those.
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--port", type=int, default=5432, help="the live cluster's port")
    parser.add_argument(
        "--output", type=Path,
        default=Path("/var/lib/prometheus/node-exporter/flaskstack_pgbackrest.prom"),
    )  # fmt: skip
    parser.add_argument(
        "--restore-check-marker", type=Path,
        default=Path("/var/lib/flaskstack-pitr-check/last-success"),
        help="the file the weekly restore check touches when it succeeds",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.stanza):
        parser.error(f"not a stanza name: {args.stanza!r}")
    if os.geteuid() != 0 and not is_postgres():
        parser.error("run it as postgres, or as root (it runs pgBackRest and psql as postgres)")

    samples = collect(args.stanza, args.port, args.restore_check_marker)
    try:
        write_atomically(args.output, render(args.stanza, samples))
    except OSError as error:
        print(f"flaskstack-backup-metrics: cannot write {args.output}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
