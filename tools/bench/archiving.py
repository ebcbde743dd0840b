"""Figures 12: continuous WAL archiving with pgBackRest, as roles/pgbackrest configures it (its
pgbackrest.conf.j2 and archiving.conf.j2 with the role's defaults: async archive-push, zstd,
aes-256-cbc, archive_timeout). Bench-only differences: the repository is a directory of the
work directory (repo1-type=posix; the role's S3 bucket is not reachable here, and what is
measured is Postgres' side: archive_command, compression, encryption, the async queue), and
the spool, lock and log paths are there too. pgBackRest runs as the throwaway cluster's owner,
as it runs as postgres on a host."""

from __future__ import annotations

import configparser
import contextlib
import io
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jinja2

from tools.bench.app_data import with_database
from tools.bench.layout import REPO, role_defaults
from tools.bench.processes import BenchError, log, stop
from tools.servers import POSTGRES_USER, PostgresServer

PGBACKREST = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
TEMPLATES = REPO / "ansible/roles/pgbackrest/templates"
OFF = {"archive_mode": "off"}
# What a full backup may take before the bench gives up on it (a small database: seconds).
BACKUP_TIMEOUT = 300


def render(name: str, **values) -> str:
    """One of the role's templates with its defaults (and those of the roles it depends on)."""
    # As Ansible renders templates (trim_blocks).
    template = jinja2.Template((TEMPLATES / name).read_text(), trim_blocks=True)
    return template.render(
        {**role_defaults("pgbackrest"), "ansible_managed": "rendered by tools/bench", **values}
    )


class PgBackRest:
    """pgBackRest for `postgres`, its repository, spool, locks and logs in `root`."""

    def __init__(self, root: Path, postgres: PostgresServer) -> None:
        self.root, self.postgres = root, postgres
        self.stanza = role_defaults("pgbackrest")["pgbackrest_stanza"]
        self.config = root / "pgbackrest.conf"
        # pgBackRest creates the repository and the spool, not the log and lock directories
        # (Debian's package and the role's tmpfiles.d make them on a host).
        paths = [root, root / "log", root / "lock"]
        for path in paths:
            path.mkdir()
        self.config.write_text(self.configuration())
        self.config.chmod(0o600)  # the repository's passphrase, as the role keeps it private
        if postgres.run_as:  # archive_command runs as the cluster's owner: it writes here
            owner = pwd.getpwnam(postgres.run_as)
            for path in [*paths, self.config]:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def configuration(self) -> str:
        """The role's pgbackrest.conf, the repository and pgBackRest's paths moved into
        `root`, the cluster the throwaway one (reached by its superuser with a password)."""
        config = configparser.ConfigParser(interpolation=None)
        config.optionxform = str  # pgBackRest's option names are case-sensitive
        config.read_string(
            render(
                "pgbackrest.conf.j2",
                # The bucket's configuration (encrypted on the db host), its repository moved below.
                pgbackrest_repository_type="s3",
                pgbackrest_cipher_pass=secrets.token_hex(32),
                pgbackrest_data_directory=self.postgres.data,
                postgres_port=self.postgres.port,
            )
        )
        shared = config["global"]
        for name in [name for name in shared if name.startswith(("repo1-s3-", "repo1-storage-"))]:
            del shared[name]
        shared.update(
            {
                "repo1-type": "posix",
                "repo1-path": str(self.root / "repository"),
                "spool-path": str(self.root / "spool"),
                "lock-path": str(self.root / "lock"),
                "log-path": str(self.root / "log"),
            }
        )
        config[self.stanza].update(
            {"pg1-socket-path": str(self.postgres.tmp), "pg1-user": POSTGRES_USER}
        )
        text = io.StringIO()
        config.write(text, space_around_delimiters=False)
        return text.getvalue()

    def settings(self) -> dict[str, str]:
        """The role's archiving.conf (archive_mode, archive_command, archive_timeout), the
        command pointed at the bench's configuration file."""
        settings = dict(
            re.findall(r"^(\w+) = '?(.*?)'?$", render("archiving.conf.j2"), re.MULTILINE)
        )
        command = settings["archive_command"]
        if not command.startswith("pgbackrest "):
            raise BenchError(f"unexpected archive_command in the role: {command}")
        settings["archive_command"] = command.replace(
            "pgbackrest", f"{PGBACKREST} --config={self.config}", 1
        )
        return settings

    def command(self, *arguments: str) -> list[str]:
        return [PGBACKREST, f"--config={self.config}", f"--stanza={self.stanza}", *arguments]

    def popen(self, *arguments: str) -> subprocess.Popen:
        """A pgBackRest command as the cluster's owner, with the superuser's password."""
        return subprocess.Popen(
            self.command(*arguments),
            user=self.postgres.run_as,
            cwd=self.root,
            env={**os.environ, "PGPASSWORD": self.postgres.password},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *arguments: str, timeout: float = 60) -> str:
        """A pgBackRest command to its end; its output, or a BenchError with what it said."""
        process = self.popen(*arguments)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
            raise BenchError(f"{' '.join(process.args)} took over {timeout} s") from None
        if process.returncode != 0:
            raise BenchError(f"{' '.join(process.args)} failed ({process.returncode}): {stderr}")
        return stdout

    def create_stanza(self) -> None:
        self.run("stanza-create")

    def full_backup(self, after: float) -> dict:
        """In `after` seconds, a full backup (as the role's weekly timer runs it); returns its
        sizes and how long it took."""
        time.sleep(after)
        self.run("--type=full", "backup", timeout=BACKUP_TIMEOUT)
        backup = json.loads(self.run("--output=json", "info"))[0]["backup"][-1]
        return {
            "database_mb": round(backup["info"]["size"] / 2**20, 1),
            "repository_mb": round(backup["info"]["repository"]["size"] / 2**20, 1),
            "seconds": backup["timestamp"]["stop"] - backup["timestamp"]["start"],
        }

    def wake_checkpointer(self) -> None:
        """What the role's unit does after a start (postgresql-pgbackrest.conf.j2): a reload,
        so that the checkpointer sleeps by archive_timeout from now on."""
        with self.cursor() as cursor:
            cursor.execute("SELECT pg_reload_conf()")

    def switch_wal(self, after: float) -> int:
        """In `after` seconds, close the current WAL segment (pg_switch_wal), so that the
        archiver has one to push; returns the bytes the switch skipped (the segment's unused
        rest, which the WAL position jumps over)."""
        time.sleep(after)
        with self.cursor() as cursor:
            cursor.execute(
                "SELECT pg_switch_wal() - '0/0', setting::bigint FROM pg_settings "
                "WHERE name = 'wal_segment_size'"
            )
            end, segment = map(int, cursor.fetchone())  # end: a numeric (Decimal)
        return -end % segment

    def counters(self) -> dict[str, int]:
        """WAL written so far (bytes) and segments archived and failed (pg_stat_archiver)."""
        with self.cursor() as cursor:
            cursor.execute(
                "SELECT pg_current_wal_lsn() - '0/0', archived_count, failed_count "
                "FROM pg_stat_archiver"
            )
            wal, archived, failed = cursor.fetchone()
        return {"wal_bytes": int(wal), "archived": archived, "failed": failed}

    @contextlib.contextmanager
    def cursor(self) -> Iterator:
        """A cursor of the cluster's superuser, on the maintenance database."""
        import psycopg2

        connection = psycopg2.connect(with_database(self.postgres.url, "postgres"))
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                yield cursor
        finally:
            connection.close()

    def close(self) -> None:
        """Stop what is left of pgBackRest (its command lines name this configuration): the
        async push detaches from Postgres and ends once its queue is empty."""
        deadline = time.monotonic() + 10
        while (pids := self.leftover()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            log(f"pgBackRest process {pid} still running: stopped")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def leftover(self) -> list[int]:
        found = []
        marker = f"--config={self.config}".encode()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker in cmdline.read_bytes().split(b"\0"):
                    found.append(int(cmdline.parent.name))
            except OSError:
                continue
        return found
