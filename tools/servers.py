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
        self.create_data_directory()

    def create_data_directory(self) -> None:
        """initdb, with POSTGRES_USER as the superuser (a subclass may make it otherwise)."""
        pwfile = self.tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
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

    def admin(self, dbname: str = "postgres"):
        """A superuser's connection in autocommit (the caller closes it)."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=POSTGRES_USER,
            password=self.password,
            dbname=dbname,
            connect_timeout=3,
        )
        connection.autocommit = True
        return connection

    def configure(self, **settings: str | None) -> None:
        """ALTER SYSTEM SET (None: RESET) and reload, for settings a running server takes."""
        admin = self.admin()
        try:
            with admin.cursor() as cursor:
                for name, value in settings.items():
                    if value is None:
                        cursor.execute(f"ALTER SYSTEM RESET {name}")
                    else:
                        cursor.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
                cursor.execute("SELECT pg_reload_conf()")
        finally:
            admin.close()

    def crash(self) -> None:
        """Postgres' "immediate" shutdown: every process quits at once, as in a crash, and the
        next start recovers from the WAL."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(timeout=30)
        self.process = None


class PostgresPrimary(PostgresServer):
    """A primary that streaming standbys follow (`PostgresStandby`). Its commits wait for a
    synchronous standby once `synchronous_standby_names` names one (`configure`), as under
    Patroni's synchronous_mode."""

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "synchronous_commit": "on"}


class PostgresStandby(PostgresServer):
    """A hot standby streaming from `primary`, made by pg_basebackup; `promote()` makes it a
    primary. It names no synchronous standby of its own, so once promoted it takes writes
    alone (Patroni names one again when another member follows it)."""

    def __init__(self, primary: PostgresServer, name: str = "standby") -> None:
        self.primary = primary
        self.name = name
        super().__init__(password=primary.password)

    def create_data_directory(self) -> None:
        conninfo = (
            f"host=127.0.0.1 port={self.primary.port} user={POSTGRES_USER} "
            f"password={self.password} application_name={self.name}"
        )
        # -R: primary_conninfo and standby.signal, so the copy starts as a standby.
        self._run(self.bin / "pg_basebackup", "-D", self.data, "-d", conninfo, "-X", "stream",
                  "-R", "-c", "fast", "--no-sync")  # fmt: skip

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "synchronous_standby_names": ""}

    def promote(self) -> None:
        """pg_ctl promote, returning once the server takes writes."""
        self._run(self.bin / "pg_ctl", "promote", "-D", self.data, "-w", "-t", "30")


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


# The Sentinel group's accounts, as roles/redis sets them up: the app's own user on the Redis
# servers and on the Sentinels (one URL serves both), the replicas' and the Sentinels' users for
# the links between members, and an admin for the tests' own commands.
SENTINEL_SERVICE = "mymaster"
REDIS_APP_USER = "flaskstack"
REDIS_ADMIN_USER = "admin"
REDIS_REPLICATION_USER = "replica"
REDIS_SENTINEL_USER = "sentinel"
# roles/redis: redis_app_acl, but FLUSHDB stays allowed (the test fixtures empty the database).
REDIS_APP_ACL = "~* &* +@all -@admin -flushall -swapdb -keys -debug -migrate"
# roles/redis, sentinel.conf.j2: what the app may ask a Sentinel.
SENTINEL_APP_ACL = (
    "resetchannels &__sentinel__:* -@all +auth +hello +ping +client|setname +client|getname "
    "+subscribe +sentinel|get-master-addr-by-name +sentinel|master +sentinel|masters "
    "+sentinel|replicas +sentinel|slaves +sentinel|sentinels"
)
# roles/redis, flaskstack-users.acl.j2: what Sentinel and the replicas may do on a Redis server.
NODE_SENTINEL_ACL = (
    "resetchannels &__sentinel__:hello -@all +multi +slaveof +ping +exec +subscribe "
    "+config|rewrite +role +publish +info +client|setname +client|kill +script|kill"
)
NODE_REPLICATION_ACL = "-@all +psync +replconf +ping"


class ConfiguredRedis(ThrowawayServer):
    """redis-server (or a Sentinel) run from a config file in a private directory. Sentinel
    rewrites its file with what it learns, and a Redis server its own on REPLICAOF from a
    Sentinel (CONFIG REWRITE): both files stay writable, and survive a restart."""

    def __init__(self, settings: list[str], sentinel: bool = False) -> None:
        self.port = free_port()
        self.sentinel = sentinel
        self.tmp = Path(tempfile.mkdtemp(prefix="flaskstack-redis-"))
        self.config_file = self.tmp / "redis.conf"
        own = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.tmp}"]
        self.config_file.write_text(
            "\n".join([*own, f"logfile {self.tmp}/redis.log", *settings]) + "\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [redis_server, str(self.config_file), *(["--sentinel"] if self.sentinel else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)

    def kill(self) -> None:
        """Gone at once, as in a crash: no shutdown, no goodbye to clients or replicas."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class RedisSentinelGroup:
    """A Redis master, its replicas and Sentinels on loopback, with the stack's ACL users and
    `min-replicas-to-write` (roles/redis), and Sentinel timings short enough for tests."""

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 2000,
        app_password: str = "redis-app-test-password",
    ) -> None:
        self.app_password = app_password
        self.admin_password = "redis-admin-test-password"
        self.replication_password = "redis-replication-test-password"
        self.sentinel_password = "redis-sentinel-test-password"
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        master = ConfiguredRedis(self._node_settings())
        self.nodes = {master.port: master}
        for _ in range(replicas):
            replica = ConfiguredRedis(
                [*self._node_settings(), f"replicaof 127.0.0.1 {master.port}"]
            )
            self.nodes[replica.port] = replica
        self.sentinels = [
            ConfiguredRedis(self._sentinel_settings(master.port), sentinel=True)
            for _ in range(sentinels)
        ]

    @property
    def url(self) -> str:
        """REDIS_URL for the app: its user, every Sentinel, the service's name."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{REDIS_APP_USER}:{self.app_password}@{hosts}/{SENTINEL_SERVICE}"

    def _node_settings(self) -> list[str]:
        return [
            'save ""',
            "appendonly no",
            "user default off resetpass nocommands",
            f"user {REDIS_ADMIN_USER} on >{self.admin_password} ~* &* +@all",
            f"user {REDIS_APP_USER} on >{self.app_password} {REDIS_APP_ACL}",
            f"user {REDIS_REPLICATION_USER} on >{self.replication_password} "
            + NODE_REPLICATION_ACL,
            f"user {REDIS_SENTINEL_USER} on >{self.sentinel_password} {NODE_SENTINEL_ACL}",
            f"masteruser {REDIS_REPLICATION_USER}",
            f"masterauth {self.replication_password}",
            "min-replicas-to-write 1",
            "min-replicas-max-lag 10",
            # A failover always resyncs the other replicas in full, and with the default 5 s
            # delay before that transfer the new master refuses writes (min-replicas) that long.
            "repl-diskless-sync-delay 0",
        ]

    def _sentinel_settings(self, master_port: int) -> list[str]:
        name = SENTINEL_SERVICE
        return [
            "sentinel resolve-hostnames no",
            f"sentinel monitor {name} 127.0.0.1 {master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
            f"sentinel auth-user {name} {REDIS_SENTINEL_USER}",
            f"sentinel auth-pass {name} {self.sentinel_password}",
            f"sentinel sentinel-user {REDIS_SENTINEL_USER}",
            f"sentinel sentinel-pass {self.sentinel_password}",
            "user default off resetpass nocommands",
            f"user {REDIS_ADMIN_USER} on >{self.admin_password} +@all",
            f"user {REDIS_SENTINEL_USER} on >{self.sentinel_password} +@all",
            f"user {REDIS_APP_USER} on >{self.app_password} {SENTINEL_APP_ACL}",
        ]

    def admin(self, port: int):
        """An admin's client of one member (a Redis server or a Sentinel), by port."""
        import redis

        return redis.Redis(
            host="127.0.0.1",
            port=port,
            username=REDIS_ADMIN_USER,
            password=self.admin_password,
            socket_timeout=2,
            socket_connect_timeout=2,
            decode_responses=True,
        )

    def master_port(self) -> int:
        """The master's port as the Sentinels name it (the first one that answers)."""
        import redis

        for sentinel in self.sentinels:
            try:
                _, port = self.admin(sentinel.port).sentinel_get_master_addr_by_name(
                    SENTINEL_SERVICE
                )
                return int(port)
            except redis.ConnectionError:
                continue
        raise RuntimeError("no Sentinel answers")

    def wait_for_master_other_than(self, port: int, timeout: float = 30.0) -> int:
        """Wait until every Sentinel names a master other than `port`; its port."""
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                named = {
                    int(self.admin(s.port).sentinel_get_master_addr_by_name(SENTINEL_SERVICE)[1])
                    for s in self.sentinels
                }
            except redis.ConnectionError:
                named = set()
            if len(named) == 1 and port not in named:
                return named.pop()
            time.sleep(0.05)
        raise TimeoutError(f"the Sentinels still name {port} or disagree")

    def failover(self) -> None:
        """SENTINEL FAILOVER, as an operator's switchover does: the master is healthy."""
        self.admin(self.sentinels[0].port).execute_command("SENTINEL", "FAILOVER", SENTINEL_SERVICE)

    def settled(self) -> bool:
        """Every Sentinel names the same master, which answers as master with every other
        server replicating from it, and knows the other Sentinels; no failover is under way."""
        import redis

        try:
            states = [
                self.admin(sentinel.port).sentinel_master(SENTINEL_SERVICE)
                for sentinel in self.sentinels
            ]
            if len({state["port"] for state in states}) != 1:
                return False
            port = int(states[0]["port"])
            if any(
                state["flags"] != "master"
                or state["num-other-sentinels"] != len(self.sentinels) - 1
                or state["num-slaves"] < len(self.nodes) - 1
                for state in states
            ):
                return False
            info = self.admin(port).info("replication")
            online = [
                value
                for key, value in info.items()
                if key.startswith("slave")
                and isinstance(value, dict)
                and value.get("state") == "online"
            ]
            return info["role"] == "master" and len(online) == len(self.nodes) - 1
        except (redis.ConnectionError, redis.ResponseError):
            return False

    def wait_until_settled(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.settled():
            if time.monotonic() > deadline:
                raise TimeoutError("the Sentinel group did not settle")
            time.sleep(0.1)

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_until_settled()

    def close(self) -> None:
        for server in [*self.sentinels, *self.nodes.values()]:
            server.close()
