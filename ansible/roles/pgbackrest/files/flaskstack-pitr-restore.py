#!/usr/bin/python3
"""Restore the database from the pgBackRest repository, to a point in time or to the newest write.

    flaskstack-pitr-restore --stanza S --database DB [--time T] [--into scratch|live] [--keep]

Before anything is restored, `pgbackrest verify` reads the whole repository (every backup file
and WAL segment against its checksum): a damaged repository is refused, never restored from.

--into scratch (default): restore beside the live cluster into a scratch cluster, start it on a
socket of its own (no TCP, no archiving), count every table of the app's database, compare its
tables with the live ones, stop and remove it (--keep leaves it for a look). A check that a
restore works, which touches nothing live: the weekly restore check runs it.
--into live: replace the live cluster (its data directory, with --delta) and start it; the
caller stops the app first. Its state before the restore stays in the repository: a restore
point is archived first.
--patroni-config (with --into live): the live cluster is the primary of a Patroni cluster whose
other members the caller stopped. Patroni is stopped here too, the cluster's state removed from
its store (etcd), and the restored server recovers on the local socket only, outside Patroni,
and is stopped once promoted: the caller then starts Patroni here (a new cluster from this data
directory) and has the other members copy it.
--time: a timestamp with a time zone ('2026-12-02 10:14:00+00'): the state just before it.
Without it, the newest state the repository holds: the restore point archived first when the
live cluster is up (exactly that state, in scratch), else the end of the archived WAL.

Prints what it did and the row count of every table; exits non-zero, with the reason on
stderr, when the restore, the recovery or the verification fails. Runs as root (pgBackRest and
Postgres then run as postgres), or as postgres for a scratch restore.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SCRATCH_DIR = Path("/var/lib/postgresql/flaskstack-pitr-check")
PGBACKREST = "/usr/bin/pgbackrest"
RUNUSER = "/usr/sbin/runuser"
SYSTEMCTL = "/usr/bin/systemctl"


class RestoreError(Exception):
    pass


# How long each step took, printed at the end: where a restore's time goes.
STEPS: list[tuple[str, float]] = []


@contextlib.contextmanager
def step(name: str):
    started = time.monotonic()
    try:
        yield
    finally:
        STEPS.append((name, time.monotonic() - started))


def postgres_argv(argv: list[str]) -> list[str]:
    """argv run as postgres: through runuser when root, as it is when postgres already."""
    if os.geteuid() == pwd.getpwnam("postgres").pw_uid:
        return argv
    return [RUNUSER, "-u", "postgres", "--", *argv]


def give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:  # as postgres, what it creates is already postgres'
        shutil.chown(path, "postgres", "postgres")


def as_postgres(argv: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(postgres_argv(argv), text=True, capture_output=True, **options)


def pgbackrest(stanza: str, *args: str) -> subprocess.CompletedProcess:
    result = as_postgres([PGBACKREST, f"--stanza={stanza}", "--log-level-console=info", *args])
    if result.returncode != 0:
        raise RestoreError(f"pgbackrest {args[-1]} failed: {last_error(result)}")
    return result


def last_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or [f"exit status {result.returncode}"])[-1].strip()


def psql(port: int, database: str, sql: str, host: str = "/run/postgresql") -> str:
    result = as_postgres(
        ["/usr/bin/psql", "-h", host, "-p", str(port), "-d", database, "-AtX",
         "-v", "ON_ERROR_STOP=1", "-c", sql]
    )  # fmt: skip
    if result.returncode != 0:
        raise RestoreError(f"psql: {last_error(result)}")
    return result.stdout.strip()


def live_is_up(port: int) -> bool:
    return (
        as_postgres(
            ["/usr/bin/pg_isready", "-q", "-h", "/run/postgresql", "-p", str(port)]
        ).returncode
        == 0
    )


def repository_system_id(stanza: str) -> str | None:
    info = json.loads(pgbackrest(stanza, "--output=json", "info").stdout)
    databases = info[0].get("db", []) if info else []
    return str(databases[-1]["system-id"]) if databases else None


def archive_the_newest_writes(stanza: str, port: int, label: str) -> str | None:
    """Mark this moment with a restore point and wait until its WAL is in the repository.

    Not when the live cluster is down, or is not the repository's (a new host, before its first
    restore), or is a standby (a Patroni member that is not the primary, in a weekly check): then
    the repository's newest archived WAL is the newest state there is.
    """
    if not live_is_up(port) or psql(port, "postgres", "SELECT pg_is_in_recovery()") == "t":
        return None
    live_id = psql(port, "postgres", "SELECT system_identifier FROM pg_control_system()")
    if live_id != repository_system_id(stanza):
        return None
    # txid_current() makes the transaction commit in the WAL: a restore to any earlier time finds
    # a commit after its target, which Postgres needs to know it reached it.
    psql(port, "postgres", f"SELECT pg_create_restore_point('{label}'), txid_current()")
    pgbackrest(stanza, "check")  # switches WAL and waits until the segment is archived
    return psql(port, "postgres", "SELECT now()")


def restore_options(time_target: str | None, restore_point: str | None = None) -> list[str]:
    if time_target:
        return ["--type=time", f"--target={time_target}", "--target-action=promote"]
    if restore_point:
        return ["--type=name", f"--target={restore_point}", "--target-action=promote"]
    return []  # to the end of the archived WAL


def verify_repository(stanza: str) -> str:
    """pgBackRest's verdict on every backup file and WAL segment, or RestoreError naming them.

    verify exits 0 even when it found damage: its report's "status: error" says so.
    """
    verify = as_postgres(
        [PGBACKREST, f"--stanza={stanza}", "--log-level-console=info", "verify", "--verbose"]
    )
    said = verify.stdout + verify.stderr
    if verify.returncode != 0:
        raise RestoreError(f"pgbackrest verify failed, nothing was restored: {last_error(verify)}")
    if re.search(r"^\s*status: (?!ok\b)", said, re.M):
        invalid = re.findall(r"invalid result (\S+): \[\d+\][^:]*: (.*)", said)
        summary = re.findall(r"^\s*((?:archiveId|backup): .*(?:\n\s+missing: .*)?)", said, re.M)
        damaged = [f"{name} ({why.strip()})" for name, why in invalid]
        totals = [
            " ".join(line.split()) for line in summary
            if re.search(r"(missing|invalid|other): [1-9]", line)
        ]  # fmt: skip
        raise RestoreError(
            "pgbackrest verify found a damaged repository, nothing was restored: "
            + "; ".join(damaged[:5] + totals[:3] or ["see pgbackrest verify --verbose"])
        )
    return "pgbackrest verify: the repository's backups and WAL are intact"


def backup_set(restore: subprocess.CompletedProcess) -> str:
    found = re.search(r"restore backup set ([^\s,]+)", restore.stdout + restore.stderr)
    return found.group(1) if found else "?"


# Clients knocking while recovery runs: not why it stopped.
NOISE = ("not accepting connections", "is starting up", "is shutting down", "is in recovery mode")


def recovery_outcome(log: str) -> str:
    """Where recovery stopped, in Postgres' own words, or why it failed."""
    fatal = [
        line for line in re.findall(r"FATAL:\s+(.*)", log) if not any(n in line for n in NOISE)
    ]
    if fatal:
        return fatal[-1]
    stopped = re.findall(r"(recovery stopping (?:before|after|at) .*)", log)
    last = re.findall(r"last completed transaction was at log time (.*)", log)
    said = [stopped[-1]] if stopped else []
    said += [f"last transaction replayed: {last[-1]}"] if last else []
    return "; ".join(said) or "recovery finished"


def wait_until_promoted(port: int, host: str, alive, log_text, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            outcome = recovery_outcome(log_text())
            if "before configured recovery target was reached" in outcome:
                outcome += (
                    " (the target is later than the newest archived WAL, or a segment before it"
                    " could not be read)"
                )
            raise RestoreError(f"Postgres stopped during recovery: {outcome}")
        ready = (
            as_postgres(["/usr/bin/pg_isready", "-q", "-h", host, "-p", str(port)]).returncode == 0
        )
        if ready and psql(port, "postgres", "SELECT pg_is_in_recovery()", host) == "f":
            return
        time.sleep(0.5)
    raise RestoreError(f"recovery did not finish in {timeout:.0f} s")


def table_counts(port: int, database: str, host: str) -> dict[str, int]:
    tables = psql(
        port, database,
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        host,
    ).split()  # fmt: skip
    counts = {}
    for table in tables:  # each name quoted by format('%I')
        counts[table] = int(psql(port, database, f"SELECT count(*) FROM {table}", host))  # noqa: S608
    return counts


def postgres_bin(data_dir: Path) -> Path:
    version = (data_dir / "PG_VERSION").read_text().strip()
    return Path(f"/usr/lib/postgresql/{version}/bin")


def restore_scratch(args, restore_point: str | None) -> tuple[str, dict[str, int], str]:
    if SCRATCH_DIR.exists():
        shutil.rmtree(SCRATCH_DIR)
    SCRATCH_DIR.mkdir(mode=0o700)
    give_to_postgres(SCRATCH_DIR)
    # WAL fetched one segment at a time: the asynchronous fetcher would take the stanza's archive
    # lock, which the live cluster's asynchronous archiving needs meanwhile.
    fetch = (
        f"{PGBACKREST} --stanza={args.stanza} --pg1-path={SCRATCH_DIR} --archive-async=n"
        ' archive-get %f "%p"'
    )
    with step("pgbackrest restore"):
        restore = pgbackrest(
            args.stanza, f"--pg1-path={SCRATCH_DIR}", "--archive-mode=off",
            f"--recovery-option=restore_command={fetch}",
            *restore_options(args.time, restore_point), "restore",
        )  # fmt: skip
    # Debian keeps a cluster's configuration in /etc: the scratch one gets its own, minimal one.
    socket_dir = SCRATCH_DIR / "socket"
    files = {
        "postgresql.conf": f"port = {args.scratch_port}\nlisten_addresses = ''\n"
        f"unix_socket_directories = '{socket_dir}'\nshared_buffers = 32MB\n"
        # No queries before promotion: a hot standby would need the live cluster's limits.
        "archive_mode = off\nhot_standby = off\n"
        # The weekly check's unit forbids writable executable memory, which JIT needs.
        "jit = off\n",
        "pg_hba.conf": "local all postgres peer\n",
        "pg_ident.conf": "",
    }
    for name, text in files.items():
        (SCRATCH_DIR / name).write_text(text)
        give_to_postgres(SCRATCH_DIR / name)
    socket_dir.mkdir(mode=0o700)
    give_to_postgres(socket_dir)
    log = SCRATCH_DIR.with_suffix(".log")
    log.unlink(missing_ok=True)
    bin_dir = postgres_bin(SCRATCH_DIR)
    server = subprocess.Popen(
        postgres_argv([str(bin_dir / "postgres"), "-D", str(SCRATCH_DIR)]),
        stdout=subprocess.DEVNULL, stderr=open(log, "w"),  # noqa: SIM115 (the child owns it)
    )  # fmt: skip
    try:
        with step("recovery"):
            wait_until_promoted(
                args.scratch_port, str(socket_dir), lambda: server.poll() is None, log.read_text
            )
        with step("counting"):
            counts = table_counts(args.scratch_port, args.database, str(socket_dir))
    finally:
        server.terminate()  # a smart shutdown: the scratch cluster has no other client
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    outcome = recovery_outcome(log.read_text())
    if not args.keep:
        shutil.rmtree(SCRATCH_DIR)
        log.unlink()
    return backup_set(restore), counts, outcome


def live_data_directory(args) -> Path:
    if live_is_up(args.port):
        return Path(psql(args.port, "postgres", "SHOW data_directory"))
    if args.data_directory:
        return Path(args.data_directory)
    # Debian's cluster "main", as its configuration names it.
    for config in sorted(glob.glob("/etc/postgresql/*/main/postgresql.conf"), reverse=True):
        found = re.search(r"^data_directory\s*=\s*'([^']+)'", Path(config).read_text(), re.M)
        if found:
            return Path(found.group(1))
    raise RestoreError("the live cluster is down and its data directory unknown: --data-directory")


def restore_live(args) -> tuple[str, dict[str, int], str]:
    data_dir = live_data_directory(args)
    # Every cluster's unit, not only postgresql.service: systemctl waits for the units it names.
    subprocess.run([SYSTEMCTL, "stop", "postgresql.service", "postgresql@*.service"], check=True)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.chown(data_dir, "postgres", "postgres")
    try:
        with step("pgbackrest restore"):
            restore = pgbackrest(args.stanza, "--delta", *restore_options(args.time), "restore")
    except RestoreError:
        # Refused before it wrote anything, or stopped part-way: pgBackRest writes pg_control
        # last, so a half-restored cluster does not start, and an untouched one gets its site back.
        subprocess.run([SYSTEMCTL, "start", "postgresql"], capture_output=True)
        raise
    logs = sorted(glob.glob("/var/log/postgresql/postgresql-*-main.log"))
    # What Postgres says from now on: the log also holds what the lost cluster said.
    offset = Path(logs[-1]).stat().st_size if logs else 0

    def log_text() -> str:
        if not logs:
            return ""
        with open(logs[-1], "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def alive() -> bool:
        state = subprocess.run(
            [SYSTEMCTL, "is-active", "postgresql@*-main.service"], capture_output=True, text=True
        )  # fmt: skip
        return "active" in state.stdout.split() or "activating" in state.stdout.split()

    with step("recovery"):
        started = subprocess.run([SYSTEMCTL, "start", "postgresql"], capture_output=True, text=True)
        if started.returncode != 0:
            raise RestoreError(f"Postgres did not start: {recovery_outcome(log_text())}")
        wait_until_promoted(args.port, "/run/postgresql", alive, log_text)
    # The unit's reload ran during recovery: wake the checkpointer again now that it is over,
    # or archive_timeout waits for the first timed checkpoint (postgresql-pgbackrest.conf.j2).
    psql(args.port, "postgres", "SELECT pg_reload_conf()")
    with step("archiving check"):
        pgbackrest(args.stanza, "check")  # the new timeline's WAL reaches the repository
    return (
        backup_set(restore),
        table_counts(args.port, args.database, "/run/postgresql"),
        (recovery_outcome(log_text())),
    )


def stop_patroni_and_forget_the_cluster(config_path: str) -> None:
    """Stop this member (its server with it) and remove the cluster's keys from the store: with
    them gone, the Patroni started on the restored data directory creates the cluster anew from
    it instead of following (or rewinding to) the history before the restore."""
    import yaml  # python3-yaml, a dependency of Debian's patroni: only this mode needs it

    scope = str(yaml.safe_load(Path(config_path).read_text())["scope"])
    subprocess.run([SYSTEMCTL, "stop", "patroni.service"], check=True)
    # patronictl asks for the cluster's name, then for the sentence below; the others are stopped
    # (and a stopped leader gives its key up), so it asks for no leader's name.
    removed = as_postgres(
        ["/usr/bin/patronictl", "-c", config_path, "remove", scope],
        input=f"{scope}\nYes I am aware\n",
    )
    if removed.returncode != 0:
        raise RestoreError(f"patronictl remove {scope} failed: {last_error(removed)}")


def restore_live_patroni(args) -> tuple[str, dict[str, int], str]:
    """The restore of a Patroni cluster's primary (--patroni-config): see the module's help."""
    primary = live_is_up(args.port) and psql(args.port, "postgres", "SELECT pg_is_in_recovery()")
    if primary != "f":
        raise RestoreError("run it on the Patroni cluster's primary, with its server running")
    data_dir = Path(psql(args.port, "postgres", "SHOW data_directory"))
    config_file = psql(args.port, "postgres", "SHOW config_file")
    with step("stopping Patroni"):
        stop_patroni_and_forget_the_cluster(args.patroni_config)
    with step("pgbackrest restore"):
        restore = pgbackrest(args.stanza, "--delta", *restore_options(args.time), "restore")
    log = Path("/var/log/postgresql/flaskstack-pitr-restore.log")
    log.unlink(missing_ok=True)
    # Patroni's own configuration (archiving included), on the local socket only: no member or
    # client reaches the server before Patroni runs it.
    server = subprocess.Popen(
        postgres_argv([str(postgres_bin(data_dir) / "postgres"), "-D", str(data_dir),
                       "-c", f"config_file={config_file}", "-c", "listen_addresses="]),
        stdout=subprocess.DEVNULL, stderr=open(log, "w"),  # noqa: SIM115 (the child owns it)
    )  # fmt: skip
    try:
        with step("recovery"):
            wait_until_promoted(
                args.port, "/run/postgresql", lambda: server.poll() is None, log.read_text
            )
        with step("archiving check"):
            pgbackrest(args.stanza, "check")  # the new timeline's WAL reaches the repository
        counts = table_counts(args.port, args.database, "/run/postgresql")
    finally:
        # A fast shutdown (its checkpoint included): Patroni starts it next.
        as_postgres([str(postgres_bin(data_dir) / "pg_ctl"), "stop", "-D", str(data_dir),
                     "-m", "fast", "-w"])  # fmt: skip
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    return backup_set(restore), counts, recovery_outcome(log.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stanza", required=True)
    parser.add_argument("--database", required=True, help="the app's database, counted")
    parser.add_argument("--time", help="restore the state just before this time (with a zone)")
    parser.add_argument("--into", choices=("scratch", "live"), default="scratch")
    parser.add_argument("--keep", action="store_true", help="keep the scratch cluster")
    parser.add_argument("--port", type=int, default=5432, help="the live cluster's port")
    parser.add_argument("--scratch-port", type=int, default=5499)
    parser.add_argument("--data-directory", help="the live cluster's, when it is not running")
    parser.add_argument(
        "--patroni-config", help="Patroni's configuration: the live cluster is its primary"
    )
    args = parser.parse_args()
    # The weekly check runs as postgres; a live restore stops and starts the cluster's units.
    if os.geteuid() != 0 and (
        args.into == "live" or os.geteuid() != pwd.getpwnam("postgres").pw_uid
    ):
        parser.error("run it as root, or as postgres for --into scratch")

    started = time.monotonic()
    label = "flaskstack-before-restore-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = args.time or "the newest archived write"
    print(f"restore of stanza {args.stanza} to {target}, into the {args.into} cluster")
    try:
        with step("pgbackrest verify"):
            verified = verify_repository(args.stanza)
        with step("archiving the live cluster's last WAL"):
            archived_at = archive_the_newest_writes(args.stanza, args.port, label)
        if archived_at:
            print(f"live cluster archived up to {archived_at} (restore point {label})")
            # Recovery would end short of it, after the live data was replaced: refuse it now.
            later = f"SELECT $t${args.time}$t$::timestamptz > $t${archived_at}$t$::timestamptz"
            if args.time and psql(args.port, "postgres", later) == "t":
                raise RestoreError(
                    f"{args.time} is later than the newest write ({archived_at}): nothing was"
                    " restored; leave the time out to restore the newest write"
                )
        else:
            print(
                "live cluster down, a standby or not the repository's: its newest archived WAL"
                " is the newest"
            )
        if args.into == "scratch":
            backup, counts, outcome = restore_scratch(args, label if archived_at else None)
            live_counts = (
                table_counts(args.port, args.database, "/run/postgresql") if archived_at else {}
            )
            missing = sorted(set(live_counts) - set(counts))
            if missing and not args.time:
                raise RestoreError(
                    f"the restored database lacks tables the live one has: {', '.join(missing)}"
                )
        else:
            restore = restore_live_patroni if args.patroni_config else restore_live
            backup, counts, outcome = restore(args)
            live_counts = {}
    except RestoreError as error:
        print(f"flaskstack-pitr-restore: {error}", file=sys.stderr)
        return 1
    print(f"from backup set {backup}: {outcome}")
    width = max([len(table) for table in counts] + [5])
    print(f"{'table':<{width}}  rows" + ("  (live now)" if live_counts else ""))
    for table, rows in counts.items():
        now = f"  ({live_counts.get(table, '-')})" if live_counts else ""
        print(f"{table:<{width}}  {rows}{now}")
    print(verified)
    print("steps: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in STEPS))
    print(f"restored in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
