"""The stack under test, as a single-host deployment runs it (in the bench's own network
namespace, so every server listens where it would on a host):

- nginx: the project's configuration (tools/bench/nginx_config.py) on ports 80 and 443.
- Caddy, the peer edge (tools/bench/caddy.py), on ports 8443 (ECDSA) and 8444 (RSA).
- the app: a release built by deploy/build-release.sh (fingerprinted, precompressed static
  files), run by gunicorn with deploy/gunicorn.conf.py and APP_ENV=production, on APP_ADDRESS
  and on the unix socket nginx uses.
- the same app on the hosts' Python (Debian 13's, in a chroot: tools/bench/hosts_python.py)
  for the last figures.
- Postgres and Redis: throwaway servers (tools/servers.py) given the roles' settings (Redis ACL
  user, AOF everysec, maxmemory; Postgres scram-sha-256, slow-query log), and for figures 12
  Postgres restarted with WAL archiving on or off (pgBackRest: tools/bench/archiving.py).

Every process it starts is stopped by PID when it closes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from tools.bench import hosts_python
from tools.bench.app_data import seed_posts, seed_users, with_database
from tools.bench.archiving import PgBackRest
from tools.bench.caddy import caddy, write_config
from tools.bench.layout import (
    APP_ADDRESS,
    APP_SOCKET,
    NGINX,
    REPO,
    SITE_HOST,
    VENV_BIN,
    role_defaults,
)
from tools.bench.nginx_config import NginxConfig, make_certificates
from tools.bench.processes import BenchError, CpuMeter, children_of, log, run, stop
from tools.servers import PostgresServer, RedisServer, wait_for_port


@contextlib.contextmanager
def nginx(config: NginxConfig) -> Iterator[subprocess.Popen]:
    run(NGINX, "-t", "-q", "-c", config.conf, "-e", config.error_log, capture_output=True)
    process = subprocess.Popen(
        [NGINX, "-c", str(config.conf), "-e", str(config.error_log), "-g", "daemon off;"]
    )
    try:
        wait_for_port(443, process)
        yield process
    finally:
        stop(process, signal.SIGQUIT)  # graceful: lets the last connections finish


def nginx_workers(master: subprocess.Popen) -> list[int]:
    workers = [
        pid
        for pid in children_of(master.pid)
        if "worker" in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    if not workers:
        raise BenchError("nginx has no worker processes")
    return workers


class DeploymentPostgres(PostgresServer):
    """The test suite's throwaway Postgres, with the postgres role's settings instead of the
    suite's no-fsync ones, and `archiving`'s (the pgbackrest role's, figures 12) on top."""

    def __init__(self, password: str) -> None:
        super().__init__(password)
        self.archiving: dict[str, str] = {}

    def settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.tmp),
            "password_encryption": "scram-sha-256",
            "log_min_duration_statement": str(
                role_defaults("postgres")["postgres_log_min_duration_statement"]
            ),
            **self.archiving,
        }


class UnixSocketRedis(RedisServer):
    """The throwaway Redis, listening on a unix socket too (`--unix-sockets`)."""

    @property
    def socket(self) -> Path:
        return self.tmp / "redis.sock"

    def arguments(self) -> list[str]:
        return [*super().arguments(), "--unixsocket", str(self.socket), "--unixsocketperm", "700"]


def unix_socket_urls(
    database_url: str, redis_url: str, postgres: PostgresServer, redis_server: UnixSocketRedis
) -> tuple[str, str]:
    """The same servers and credentials, reached through their unix sockets."""
    db = urllib.parse.urlsplit(database_url)
    cache = urllib.parse.urlsplit(redis_url)
    return (
        f"postgresql://{db.username}:{db.password}@{db.path}"
        f"?host={postgres.tmp}&port={postgres.port}",
        f"unix://{cache.username}:{cache.password}@{redis_server.socket}?db=0",
    )


def configure_redis_like_the_role(server: RedisServer) -> str:
    """Give the throwaway Redis the redis role's settings; returns the app's REDIS_URL."""
    import redis

    defaults = role_defaults("redis")
    admin = redis.Redis(host="127.0.0.1", port=server.port, password=server.password)
    admin.config_set("appendonly", "yes" if defaults["redis_appendonly"] else "no")
    admin.config_set("appendfsync", defaults["redis_appendfsync"])
    admin.config_set("maxmemory", defaults["redis_maxmemory"])
    admin.config_set("maxmemory-policy", defaults["redis_maxmemory_policy"])
    password = secrets.token_hex(16)
    user = defaults["redis_app_user"]
    admin.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", *defaults["redis_app_acl"].split()
    )
    admin.close()
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def build_release(work: Path) -> Path:
    """The release the hosts would get: deploy/build-release.sh, unpacked."""
    archive = run(
        REPO / "deploy/build-release.sh",
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable, "RELEASES_DIR": str(work / "archives")},
    ).stdout.strip()
    release = work / "release"
    release.mkdir()
    run("tar", "-xzf", archive, "-C", release)
    release.chmod(0o755)
    return release


def migrate(release: Path, env: dict[str, str]) -> None:
    flask = [VENV_BIN / "python", "-m", "flask", "--app", "app"]
    run(*flask, "db", "upgrade", cwd=release, env=env, capture_output=True)


def app_environment(work: Path, database_url: str, redis_url: str) -> dict[str, str]:
    """The app's environment, as the systemd unit and .env give it on a host."""
    return {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "LANG": "C.UTF-8",
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SITE_URL": f"https://{SITE_HOST}",
        "LOG_LEVEL": "INFO",
        "SMTP_HOST": "localhost",
        "MAIL_FROM": f"flaskstack <noreply@{SITE_HOST}>",
        "GUNICORN_BIND": f"{APP_ADDRESS[0]}:{APP_ADDRESS[1]},unix:{work / APP_SOCKET}",
        "PYTHONUNBUFFERED": "1",  # as the systemd unit sets it
        # gunicorn's control socket: the bench's own, not ~/.gunicorn/ of whoever runs it
        # (as the unit's RuntimeDirectory gives each service its own).
        "XDG_RUNTIME_DIR": str(work),
        **{k: v for k, v in os.environ.items() if k.startswith("GUNICORN_WORKERS")},
    }


class Gunicorn:
    """gunicorn on the release, from the bench's virtualenv, or from the hosts' Python in
    `root` (tools/bench/hosts_python.py)."""

    def __init__(
        self, release: Path, env: dict[str, str], log_path: Path, root: Path | None = None
    ) -> None:
        self.log_file = log_path.open("ab")
        arguments = ("-c", "deploy/gunicorn.conf.py")
        if root is None:
            argv = [str(VENV_BIN / "gunicorn"), *arguments]
        else:
            argv = hosts_python.command(root, release, "gunicorn", *arguments)
            env = {**env, "PATH": hosts_python.path_inside()}
        self.process = subprocess.Popen(
            argv,
            cwd=release,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(APP_ADDRESS[1], self.process)

    def workers(self) -> list[int]:
        return children_of(self.process.pid)

    def close(self) -> None:
        stop(self.process)
        self.log_file.close()


class Stack:
    """Starts the stack in `work` and stops it on close(); `meter` accounts for the CPU of
    each server (app, postgres, redis, nginx)."""

    def __init__(self, work: Path, meter: CpuMeter, unix_sockets: bool, nginx_http: str) -> None:
        self.work, self.meter = work, meter
        self.unix_sockets, self.nginx_http = unix_sockets, nginx_http
        self.logs, self.certs = work / "logs", work / "certs"
        self.cleanup = contextlib.ExitStack()
        self.app: Gunicorn | None = None
        self.hosts_root: Path | None = None

    def start(self, posts: int) -> None:
        """Everything, the app's database seeded with `posts` posts."""
        self.logs.mkdir()
        log("certificates from a throwaway CA (ECDSA P-256, RSA 2048)")
        self.ca_cert = make_certificates(self.certs)
        log("release: deploy/build-release.sh")
        self.release = build_release(self.work)
        self.static_root = self.release / "deploy/static"
        self.manifest = json.loads((self.static_root / "dist/manifest.json").read_text())
        log("Postgres and Redis with the roles' settings")
        self.start_databases()
        log("migrations (flask db upgrade) and seed data")
        migrate(self.release, self.app_env)
        seed_users(self.postgres.url)
        seed_posts(self.postgres.url, posts)
        log("gunicorn (deploy/gunicorn.conf.py) and nginx (nginx/)")
        self.cleanup.callback(self.stop_app)
        self.start_app(self.database_url)
        config = self.nginx_config("nginx")
        self.features = config.features
        edge = self.cleanup.enter_context(nginx(config))
        log("Caddy (tools/bench/Caddyfile.template), the peer edge, beside nginx")
        self.caddy_config = write_config(
            self.work / "caddy", self.certs, self.static_root, self.logs, self.work
        )
        peer = self.cleanup.enter_context(caddy(self.caddy_config))
        self.meter.track("postgres", self.postgres.process.pid)
        self.meter.track("redis", self.redis.process.pid)
        self.meter.track("nginx", edge.pid)
        self.meter.track("caddy", peer.pid)

    def start_databases(self) -> None:
        self.postgres = DeploymentPostgres(password=secrets.token_hex(16))
        self.cleanup.callback(self.postgres.close)
        self.postgres.start()
        self.postgres.create_database()
        self.redis = UnixSocketRedis(password=secrets.token_hex(16))
        self.cleanup.callback(self.redis.close)
        self.redis.start()
        redis_url = configure_redis_like_the_role(self.redis)
        self.database_url = self.postgres.url
        if self.unix_sockets:
            self.database_url, redis_url = unix_socket_urls(
                self.database_url, redis_url, self.postgres, self.redis
            )
        self.app_env = app_environment(self.work, self.database_url, redis_url)

    def description(self) -> dict:
        """The stack's part of results.json's "environment"."""
        return {
            "nginx_features": self.features,
            "gunicorn_workers": len(self.app.workers()),
            "app_to_postgres_and_redis": "unix sockets" if self.unix_sockets else "TCP (127.0.0.1)",
        }

    def static_path(self, name: str) -> str:
        """The URL path of a static file of the release, fingerprinted."""
        return f"/static/dist/{self.manifest[name]}"

    def nginx_config(self, name: str) -> NginxConfig:
        """Another configuration directory `name` in the work directory."""
        return NginxConfig(
            self.work / name, self.certs, self.static_root, self.logs, self.nginx_http
        )

    def add_database(self, name: str, posts: int) -> str:
        """A second database on the same server, migrated and seeded; returns its URL."""
        url = with_database(self.database_url, name)
        self.postgres.create_database(name)
        migrate(self.release, {**self.app_env, "DATABASE_URL": url})
        seed_users(url)
        seed_posts(url, posts)
        return url

    def pgbackrest(self) -> PgBackRest:
        """pgBackRest for the stack's Postgres, its files in the work directory. At the end,
        Postgres stops first: its archiver's last archive_command may start an async push."""
        tool = PgBackRest(self.work / "pgbackrest", self.postgres)
        self.cleanup.callback(tool.close)
        self.cleanup.callback(self.postgres.stop)
        return tool

    def restart_postgres(self, archiving: dict[str, str]) -> None:
        """Postgres restarted with `archiving`'s settings (archive_mode takes a restart), and
        gunicorn with it, so that both conditions start from fresh workers and pools."""
        self.stop_app()
        self.postgres.stop()
        self.postgres.archiving = archiving
        self.postgres.start()
        self.meter.track("postgres", self.postgres.process.pid)
        self.start_app(self.database_url)

    def use_hosts_python(self, lower_layers: str) -> str:
        """From now on, gunicorn runs on the hosts' Python; returns its version."""
        self.stop_app()
        self.hosts_root = self.cleanup.enter_context(
            hosts_python.hosts_root(self.work, lower_layers)
        )
        self.cleanup.callback(self.stop_app)  # before the root is unmounted
        self.start_app(self.database_url)
        return hosts_python.version(self.hosts_root)

    def start_app(self, database_url: str, metrics: bool = False) -> Gunicorn:
        """gunicorn with the stack's config on `database_url`, its CPU metered as "app"; with
        `metrics`, counting its requests in metrics_dir as the hosts' web unit does."""
        env = {**self.app_env, "DATABASE_URL": database_url}
        if metrics:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        self.app = Gunicorn(self.release, env, self.logs / "gunicorn.log", self.hosts_root)
        self.meter.track("app", self.app.process.pid)
        return self.app

    @property
    def metrics_dir(self) -> Path:
        return self.work / "metrics"

    def requests_counted(self) -> int:
        """Requests the running gunicorn's workers have counted (its master cleared the files of
        the one before), added up as deploy/metrics.py does."""
        from prometheus_client.multiprocess import MultiProcessCollector

        files = [str(path) for path in self.metrics_dir.glob("*.db")]
        samples = [s for metric in MultiProcessCollector.merge(files) for s in metric.samples]
        return int(sum(s.value for s in samples if s.name == "flaskstack_http_requests_total"))

    def stop_app(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    def close(self) -> None:
        self.cleanup.close()
