"""gunicorn settings shared by every way of running the app (systemd, Docker, `make dev`).

Run as `gunicorn -c deploy/gunicorn.conf.py` from the release directory (or the app's): the app's
flaskstack.toml there names its WSGI entry point and its configuration check. Under systemd socket
activation gunicorn finds the inherited socket through LISTEN_FDS and ignores `bind`, so
restarts never refuse a connection: systemd keeps accepting while workers are replaced.
"""

import importlib
import importlib.util
import os
import sys

from dotenv import load_dotenv


def _read_manifest() -> dict:
    # manifest.py by its path: deploy/ is no package, and the app's modules keep their names.
    spec = importlib.util.spec_from_file_location(
        "flaskstack_manifest",
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.py"),
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.load(os.getcwd())["app"]
    except module.ManifestError as exc:
        sys.exit(f"flaskstack: {exc}")


_app = _read_manifest()

# The settings below come from the environment, and on the Ansible hosts the environment is the
# release's .env: load it now, before they are read, not only in the workers (create_app). It
# never overrides a variable that is already set (Docker, systemd, tests).
load_dotenv(os.path.join(os.getcwd(), ".env"))

wsgi_app = _app["wsgi"]

# One address or several, comma-separated ("127.0.0.1:8000,unix:/run/app.sock"). Under systemd,
# the socket unit's ListenStream lines are the addresses instead.
bind = (os.environ.get("GUNICORN_BIND") or "127.0.0.1:8000").split(",")


def _default_workers() -> int:
    # cores + 1 sync workers, capped at 12. Not the classic 2 x cores + 1: a request here is
    # mostly CPU in Python (a page waits on Postgres for a fraction of its time, a local one
    # even less), and on a single host nginx, Postgres and Redis want the same cores. Extra
    # workers only queue for the CPU and add context switches, tail latency, memory and
    # Postgres connections (see tools/bench/README.md, "Where it stands").
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min((cores or 1) + 1, 12)


workers = int(os.environ.get("GUNICORN_WORKERS") or _default_workers())
worker_class = "sync"

# A request that takes longer than this is stuck: its worker is killed and replaced. The
# timeouts fire from the inside out, so that whoever gives up first also stops the work: the
# app's own (Postgres statement_timeout, Redis and pool timeouts in app/config.py, answered with
# the app's 503 page) long before this one, and this one before nginx's proxy_read_timeout
# (PROXY_READ_TIMEOUT, nginx/defaults.env). Killing the worker rolls its transaction back, so
# the client's 502 is true; were nginx first, its 504 could precede a POST that still commits.
timeout = 30
# On SIGTERM/restart, in-flight requests get this long to finish. The process managers must wait
# longer before they kill: systemd's TimeoutStopSec (app_web_stop_timeout in
# ansible/roles/app/defaults/main.yml) and Compose's stop_grace_period (docker-compose.yml).
# tests/unit/test_timeouts_in_order.py checks both orders.
graceful_timeout = 30
# Idle keep-alive for worker classes that keep connections (gthread, gevent) if one is ever
# chosen through GUNICORN_CMD_ARGS; the sync workers used here close every connection.
keepalive = 5
# Recycle workers now and then (bounded memory growth); jitter avoids all restarting at once.
# Not often: a new worker imports and builds the app again, which costs CPU and a latency spike
# each time (what it costs at which interval: tools/bench/README.md, "Where it stands").
max_requests = 25000
max_requests_jitter = 2500
# The worker heartbeat file on tmpfs: on a disk it can block workers under I/O load.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# Trust X-Forwarded-Proto only from nginx: loopback by default (a unix socket is always trusted).
# The one default of FORWARDED_ALLOW_IPS (.env-template leaves it empty).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"

# Logs to stdout/stderr for journald or Docker; the request id comes from nginx.
accesslog = "-"
errorlog = "-"
loglevel = (os.environ.get("LOG_LEVEL") or "info").strip().lower()  # the app's LOG_LEVEL too
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}i)s "%(a)s"'

proc_name = "flaskstack-web"

# No control socket (gunicornc): systemd and Compose manage the server, and its default place, a
# directory in the user's home, is read-only here (the server logged an error at every start).
control_socket_disable = True


def on_starting(server):
    """Run the app's configuration check (flaskstack.toml's `check`) once in the master: a bad
    setting stops it with one line, instead of every worker failing to boot in a loop."""
    if not _app["check"]:
        return
    module, function = _app["check"].split(":")
    try:
        getattr(importlib.import_module(module), function)()
    except SystemExit as exc:  # the blog's ConfigError: the message is its code
        print(f"flaskstack: configuration error: {exc.code}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - any failure of the app's own check stops the start
        print(f"flaskstack: configuration error: {exc}", file=sys.stderr)
        sys.exit(1)
