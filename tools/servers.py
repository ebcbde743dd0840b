"""Throwaway Postgres, Redis and SMTP servers for the test suite.

Each runs from a private temporary directory on a free loopback port, as a child process of
the test run, and is stopped (and its directory removed) at the end even when tests fail.
Postgres refuses to run as root, so as root it runs as the unprivileged `nobody` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

from aiosmtpd.controller import Controller

POSTGRES_USER = "flaskstack"
POSTGRES_DB = "flaskstack_test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def postgres_bin_dir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(candidates[-1])


class ThrowawayServer:
    """A server process of the test run with a private directory, stopped and removed at the end."""

    tmp: Path
    process: subprocess.Popen | None
    stop_signal = signal.SIGTERM

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class PostgresServer(ThrowawayServer):
    stop_signal = signal.SIGINT  # Postgres' "fast" shutdown: ends sessions at once

    def __init__(self, password: str = "pg-test-password") -> None:
        self.password = password
        self.port = free_port()
        self.bin = postgres_bin_dir()
        self.tmp = Path(tempfile.mkdtemp(prefix="flaskstack-pg-"))
        self.data = self.tmp / "data"
        self.process: subprocess.Popen | None = None
        self.run_as = "nobody" if os.geteuid() == 0 else None
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.tmp, entry.pw_uid, entry.pw_gid)
        pwfile = self.tmp / "pwfile"
        pwfile.write_text(password + "\n")
        if self.run_as:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            POSTGRES_USER,
            "--pwfile",
            pwfile,
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}:{self.password}@127.0.0.1:{self.port}/{POSTGRES_DB}"

    def _run(self, *args) -> None:
        subprocess.run(
            [str(a) for a in args],
            check=True,
            capture_output=True,
            user=self.run_as,
            cwd=self.tmp,
        )

    def settings(self) -> dict[str, str]:
        """postgresql.conf settings for this run (a subclass may run other ones)."""
        return {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.tmp),
            # Durability is irrelevant for a throwaway database; speed is not.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }

    def start(self) -> None:
        options = [
            arg for name, value in self.settings().items() for arg in ("-c", f"{name}={value}")
        ]
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), *options],
            user=self.run_as,
            cwd=self.tmp,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "postgres.log", "ab"),  # noqa: SIM115 - owned by the child
        )
        wait_for_port(self.port, self.process)
        # The port answers a moment before Postgres accepts logins.
        deadline = time.monotonic() + 30
        while True:
            probe = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Postgres on port {self.port} does not accept connections")
            time.sleep(0.05)

    def create_database(self, name: str = POSTGRES_DB) -> None:
        import psycopg2

        admin = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=POSTGRES_USER,
            password=self.password,
            dbname="postgres",
        )
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            cursor.execute(f"CREATE DATABASE {name}")
        admin.close()


class RedisServer(ThrowawayServer):
    def __init__(self, password: str = "redis-test-password") -> None:
        self.password = password
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="flaskstack-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def arguments(self) -> list[str]:
        """redis-server's command-line settings (a subclass may add to them)."""
        return [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            self.password,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.tmp),
            "--logfile",
            str(self.tmp / "redis.log"),
        ]

    def start(self) -> None:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [redis_server, *self.arguments()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)


class MailSink:
    """An aiosmtpd SMTP server that keeps every message it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self._arrived = threading.Condition()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd API
        with self._arrived:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            self._arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            return list(self.messages)

    def start(self) -> None:
        self.controller.start()
        self._started = True

    def close(self) -> None:
        if getattr(self, "_started", False):
            self.controller.stop()
            self._started = False
