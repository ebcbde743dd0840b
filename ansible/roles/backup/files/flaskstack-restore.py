#!/usr/bin/python3
"""Check a flaskstack-backup dump by restoring it, or restore it into the live database.

  flaskstack-restore [--into scratch|live] [--keep] [--verify-only] DUMP

DUMP is a pg_dump custom-format file with its manifest beside it (same name, .json). First the
dump's size and sha256 must match the manifest's: otherwise nothing is touched (exit 1). Then:

  --into scratch (default)  restore into BACKUP_RESTORE_CHECK_DATABASE (dropped first if present),
                            compare every table's row count with the manifest, drop it again
                            (--keep leaves it for a look).
  --into live               replace the objects of the app database (BACKUP_DATABASE) with the
                            dump's in one transaction (pg_restore --clean --single-transaction),
                            created as the app's role (BACKUP_DATABASE_OWNER), then compare the
                            counts. Stop the app first: its connections are ended.
  --verify-only             only the sha256 check.

Prints one line per table (manifest vs restored) and exits 1 when any count differs or a step
fails, with a one-line reason. Settings: /etc/default/flaskstack-backup. Runs as postgres (root
is switched to postgres).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

DEFAULTS = Path("/etc/default/flaskstack-backup")
SETTINGS = {
    "BACKUP_DATABASE": "flaskstack",
    "BACKUP_DATABASE_OWNER": "flaskstack",
    "BACKUP_RESTORE_CHECK_DATABASE": "flaskstack_restore_check",
    "PGPORT": "5432",
}
# Every table's rows in the public schema: the same query flaskstack-backup runs for its manifest.
COUNT_ROWS = """
SELECT coalesce(json_object_agg(relname, row_count ORDER BY relname), '{}')
FROM (SELECT c.relname,
             (xpath('/row/n/text()',
                    query_to_xml(format('SELECT count(*) AS n FROM %I.%I', s.nspname, c.relname),
                                 false, true, '')))[1]::text::bigint AS row_count
      FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
      WHERE s.nspname = 'public' AND c.relkind IN ('r', 'p')) AS counted
"""
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RestoreError(Exception):
    """A step failed: its one-line reason."""


def read_settings() -> dict[str, str]:
    settings = dict(SETTINGS)
    if DEFAULTS.exists():
        for line in DEFAULTS.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not name.startswith("#"):
                settings[name.strip()] = value.strip().strip("'\"")
    for name in ("BACKUP_DATABASE", "BACKUP_DATABASE_OWNER", "BACKUP_RESTORE_CHECK_DATABASE"):
        if not IDENTIFIER.fullmatch(settings[name]):
            raise RestoreError(f"{name} in {DEFAULTS} is not a plain identifier")
    return settings


def run(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
        raise RestoreError(f"{what} failed: {(errors or lines or ['no message'])[0]}")
    return result.stdout


def psql(database: str, sql: str, what: str) -> str:
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql]
    return run(argv, what).strip()


def row_counts(database: str) -> dict[str, int]:
    return json.loads(psql(database, COUNT_ROWS, f"counting the rows of {database}"))


def load_manifest(dump: Path) -> dict:
    manifest_path = dump.with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise RestoreError(f"no manifest beside the dump: {manifest_path} is missing") from None
    except (OSError, ValueError) as exc:
        raise RestoreError(f"cannot read the manifest {manifest_path}: {exc}") from None
    missing = {"sha256", "size", "tables"} - manifest.keys()
    if missing:
        raise RestoreError(f"the manifest {manifest_path} lacks {', '.join(sorted(missing))}")
    return manifest


def verify(dump: Path, manifest: dict) -> None:
    """The dump is the one the manifest describes, byte for byte."""
    digest = hashlib.sha256()
    with dump.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != manifest["sha256"]:
        raise RestoreError(
            f"{dump.name} does not match its manifest: sha256 {actual[:16]}… instead of "
            f"{manifest['sha256'][:16]}… (damaged or altered); refusing to restore it"
        )
    if dump.stat().st_size != manifest["size"]:
        raise RestoreError(f"{dump.name} has another size than its manifest says")


def restore_scratch(dump: Path, database: str, keep: bool) -> dict[str, int]:
    drop = f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    psql("postgres", drop, f"dropping the scratch database {database}")
    psql("postgres", f"CREATE DATABASE {database}", f"creating the scratch database {database}")
    try:
        # Owned by postgres: the check needs no role of the live database.
        run(["pg_restore", "--no-owner", "--exit-on-error", "-d", database, str(dump)],
            f"pg_restore into {database}")  # fmt: skip
        return row_counts(database)
    finally:
        if not keep:
            psql("postgres", drop, f"dropping the scratch database {database}")


def restore_live(dump: Path, database: str, owner: str) -> dict[str, int]:
    # The app is stopped; any connection left (a console, a forgotten job) would block the
    # restore's locks, or write in the middle of it.
    # (database is an identifier, checked by read_settings.)
    terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
    terminate += f"datname = '{database}' AND pid <> pg_backend_pid()"
    psql("postgres", terminate, f"ending the connections to {database}")
    # All or nothing: a failure leaves the database as it was. The objects are created as the
    # app's role (SET ROLE), so the app owns its tables again, as after a migration.
    run(["pg_restore", "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
         "--no-owner", f"--role={owner}", "-d", database, str(dump)],
        f"pg_restore into {database}")  # fmt: skip
    return row_counts(database)


def compare(expected: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Prints the table of counts; returns the tables whose counts differ."""
    width = max([len("table"), *map(len, expected), *map(len, restored)])
    print(f"{'table':<{width}}  {'manifest':>10}  {'restored':>10}")
    differing = []
    for table in sorted(expected.keys() | restored.keys()):
        want, got = expected.get(table), restored.get(table)
        mark = "" if want == got else "  <- differs"
        if want != got:
            differing.append(table)
        show = lambda n: "-" if n is None else str(n)  # noqa: E731
        print(f"{table:<{width}}  {show(want):>10}  {show(got):>10}{mark}")
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Check a flaskstack-backup dump by restoring it (or restore it live)."
    )
    parser.add_argument("dump", type=Path, help="the .dump file; its .json manifest beside it")
    parser.add_argument("--into", choices=["scratch", "live"], default="scratch")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--verify-only", action="store_true", help="only check the sha256")
    args = parser.parse_args()

    if os.geteuid() == 0:
        # Peer authentication over the local socket: the postgres OS user needs no password.
        argv = ["/usr/sbin/runuser", "-u", "postgres", "--", sys.argv[0], *sys.argv[1:]]
        os.execv(argv[0], argv)  # noqa: S606
    if pwd.getpwuid(os.geteuid()).pw_name != "postgres":
        raise RestoreError("run as postgres or root")

    settings = read_settings()
    os.environ["PGPORT"] = settings["PGPORT"]
    dump = args.dump.resolve()
    if not dump.is_file():
        raise RestoreError(f"no dump at {dump}")
    manifest = load_manifest(dump)
    verify(dump, manifest)
    print(f"{dump.name}: sha256 and size match the manifest ({manifest['size']} bytes)")
    if args.verify_only:
        return 0

    started = time.monotonic()
    if args.into == "live":
        database = settings["BACKUP_DATABASE"]
        restored = restore_live(dump, database, settings["BACKUP_DATABASE_OWNER"])
    else:
        database = settings["BACKUP_RESTORE_CHECK_DATABASE"]
        restored = restore_scratch(dump, database, args.keep)
    seconds = time.monotonic() - started

    differing = compare(manifest["tables"], restored)
    if differing:
        raise RestoreError(
            f"restored into {database} in {seconds:.1f} s, but the row counts of "
            f"{', '.join(differing)} differ from the manifest"
        )
    kept = " (kept)" if args.into == "scratch" and args.keep else ""
    print(
        f"restored into {database}{kept} in {seconds:.1f} s: the row counts of all "
        f"{len(restored)} tables match the manifest of {manifest.get('created_at', '?')}"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RestoreError as error:
        sys.stdout.flush()
        print(f"flaskstack-restore: {error}", file=sys.stderr)
        sys.exit(1)
