"""gunicorn settings shared by every way of running the app (systemd, Docker, `make dev`).

Run as `gunicorn -c deploy/gunicorn.conf.py` from the release directory (or the app's): the app's
flaskstack.toml there names its WSGI entry point and its configuration check. Under systemd socket
activation gunicorn finds the inherited socket through LISTEN_FDS and ignores `bind`, so
restarts never refuse a connection: systemd keeps accepting while workers are replaced. With
PROMETHEUS_MULTIPROC_DIR set, its hooks count every request for deploy/metrics.py to serve.
"""

import glob
import importlib
import importlib.util
import os
import sys
import time

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


# ---- request metrics (Prometheus) --------------------------------------------------------------
# Rate, errors and duration of requests by endpoint, counted in gunicorn's own hooks below, so any
# app is measured without its cooperation. prometheus_client's multiprocess mode: each worker
# writes its counts to files of its own in PROMETHEUS_MULTIPROC_DIR, which deploy/metrics.py adds
# up. Without the variable, or without prometheus-client in the app's lock, nothing changes.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Empty means unset (.env-template); prometheus_client would take "" for the working directory.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
# Flask's matched URL rule, noted in the request's environ for post_request (see _note_endpoint).
_ENDPOINT = "flaskstack.endpoint"
# The method label takes a known method or "other": a client chooses it, and every distinct label
# value is a time series of its own.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_requests = _duration = None
if _metrics_dir:
    try:
        from prometheus_client import Counter, Histogram
        from prometheus_client.multiprocess import mark_process_dead
    except ImportError:
        print(
            "flaskstack: PROMETHEUS_MULTIPROC_DIR is set, but the app's lock lacks "
            "prometheus-client: no request metrics",
            file=sys.stderr,
        )
    else:
        # registry=None: the app's own metrics may use the default registry freely.
        _requests = Counter(
            "flaskstack_http_requests_total",
            "HTTP requests answered by the app",
            ("method", "endpoint", "status"),
            registry=None,
        )
        _duration = Histogram(
            "flaskstack_http_request_duration_seconds",
            "Time from reading a request to the end of its answer",
            ("method", "endpoint"),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=None,
        )


def _start_metrics() -> None:
    """A new server counts from zero: files of an earlier run would add their counts to its own."""
    try:
        os.makedirs(_metrics_dir, exist_ok=True)
        for path in glob.glob(os.path.join(_metrics_dir, "*.db")):
            os.remove(path)
    except OSError as exc:
        print(f"flaskstack: PROMETHEUS_MULTIPROC_DIR: {exc}", file=sys.stderr)
        sys.exit(1)


def _note_endpoint(sender, **extra) -> None:
    """Flask's request_started signal: the request's URL rule, matched by then. (Flask takes its
    request object out of the environ at the end, before post_request could look there.)"""
    request = sys.modules["flask"].request
    rule = request.url_rule
    if rule is None:
        endpoint = "unmatched"  # a 404 or 405 that no rule matched
    elif rule.endpoint == "static" or rule.endpoint.endswith(".static"):
        endpoint = "static"
    else:
        endpoint = rule.rule  # the pattern, e.g. /posts/<int:post_id>: bounded, never the path
    request.environ[_ENDPOINT] = endpoint


if _requests is not None:

    def post_worker_init(worker):
        # The app is loaded: a Flask app has imported flask; another app has nothing to connect.
        flask = sys.modules.get("flask")
        if flask is not None:
            flask.request_started.connect(_note_endpoint, weak=False)

    def pre_request(worker, req):
        worker.log.debug("%s %s", req.method, req.path)  # gunicorn's default pre_request
        req.flaskstack_started = time.perf_counter()

    def post_request(worker, req, environ, resp):
        if resp is None:
            return  # refused before it reached the app (gunicorn answered it)
        method = req.method if req.method in _METHODS else "other"
        endpoint = environ.get(_ENDPOINT, "unmatched")
        # No status: the app raised before answering, and gunicorn sends a 500.
        _requests.labels(method, endpoint, str(resp.status_code or 500)).inc()
        _duration.labels(method, endpoint).observe(time.perf_counter() - req.flaskstack_started)

    def child_exit(server, worker):
        # A dead worker's counts stay in its files (the totals must not drop); only its live
        # gauges, if the app keeps any, go.
        mark_process_dead(worker.pid, _metrics_dir)


def on_starting(server):
    """In the master, before any worker: the request metrics' directory made ready, and the app's
    configuration check (flaskstack.toml's `check`) run once: a bad setting stops it with one
    line, instead of every worker failing to boot in a loop."""
    if _requests is not None:
        _start_metrics()
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
