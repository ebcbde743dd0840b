#!/usr/bin/env python3
"""The app's Prometheus metrics over HTTP: `python deploy/metrics.py --bind ADDRESS:PORT`.

Run from the release's directory (or the app's), as the app's user, with its virtualenv and the
web service's PROMETHEUS_MULTIPROC_DIR. `GET /metrics` adds up what gunicorn's workers count in
that directory (requests by endpoint and status, their duration: deploy/gunicorn.conf.py) and
appends the app's own metrics when its flaskstack.toml names a collector (`metrics`), with
flaskstack_app_metrics_up saying whether that collector answered. A scrape never fails for want
of either: no directory yet (gunicorn not started) means no request metrics yet, a collector
that raises (its Redis is down) means flaskstack_app_metrics_up 0.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import signal
import socket
import sys
from collections.abc import Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

import manifest
from dotenv import load_dotenv

try:
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import ThreadingWSGIServer
    from prometheus_client.multiprocess import MultiProcessCollector
except ImportError:
    sys.exit("flaskstack: the metrics need prometheus-client in the app's lock (requirements.txt)")


def log(message: str) -> None:
    print(f"flaskstack-metrics: {message}", file=sys.stderr, flush=True)


class WorkerFiles:
    """The workers' files, added up at each scrape as prometheus_client's MultiProcessCollector
    does (which refuses a directory that does not exist yet)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        for _ in range(3):
            try:
                files = glob.glob(os.path.join(self.path, "*.db"))
                return MultiProcessCollector.merge(files, accumulate=True)
            except FileNotFoundError:
                continue  # a starting gunicorn removed its predecessor's files meanwhile
        return []


class AppMetrics:
    """The app's collector ("module:name": a collector, or a callable returning one), made at the
    first scrape and again at the next ones until that works."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.collector = None
        self.up: int | None = None

    def collect(self) -> Iterable[Metric]:
        try:
            if self.collector is None:
                module, name = self.reference.split(":")
                found = getattr(importlib.import_module(module), name)
                self.collector = found if hasattr(found, "collect") else found()
            metrics, up = list(self.collector.collect()), 1
        except Exception as exc:  # noqa: BLE001 - whatever the app's code raises, the scrape answers
            metrics, up = [], 0
            if self.up != 0:
                log(f"the app's metrics ({self.reference}) failed: {type(exc).__name__}: {exc}")
        else:
            if self.up == 0:
                log(f"the app's metrics ({self.reference}) answer again")
        self.up = up
        yield from metrics
        yield GaugeMetricFamily(
            "flaskstack_app_metrics_up",
            "1 if the app's own collector answered this scrape, else 0",
            value=up,
        )


class QuietHandler(WSGIRequestHandler):
    """No line per scrape; and a client that sends nothing does not hold a thread forever."""

    timeout = 10

    def log_message(self, format: str, *args: object) -> None:
        pass


def registry(metrics_dir: str | None, app_collector: str | None) -> CollectorRegistry:
    # Not prometheus_client's default registry: this process's own figures would mislead.
    collectors = CollectorRegistry(auto_describe=False)
    if metrics_dir:
        collectors.register(WorkerFiles(metrics_dir))
    if app_collector:
        collectors.register(AppMetrics(app_collector))
    return collectors


def metrics_app(collectors: CollectorRegistry):
    metrics = make_wsgi_app(collectors)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/metrics":
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found: the metrics are at /metrics\n"]

    return app


def address(bind: str) -> tuple[str, int]:
    """ADDRESS:PORT, [IPv6]:PORT or :PORT (every address)."""
    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"{bind!r} is not ADDRESS:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - only when asked for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/metrics.py", description=__doc__.split("\n")[0])
    parser.add_argument("--bind", type=address, default="127.0.0.1:9200", help="ADDRESS:PORT")
    args = parser.parse_args(argv)

    # The settings as gunicorn and the app read them: the environment, then the release's .env.
    load_dotenv(os.path.join(os.getcwd(), ".env"))
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    try:
        app_collector = manifest.load(os.getcwd())["app"]["metrics"]
    except manifest.ManifestError as exc:
        log(str(exc))
        return 1
    # The app's modules from its directory, as gunicorn imports them.
    sys.path.insert(0, os.getcwd())

    host, port = args.bind
    server_class = type(
        "Server",
        (ThreadingWSGIServer,),
        {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
    )
    server = make_server(
        host, port, metrics_app(registry(metrics_dir, app_collector)), server_class, QuietHandler
    )
    # As a container's PID 1, SIGTERM does nothing without a handler.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    shown = f"[{host}]" if ":" in host else host
    log(
        f"http://{shown}:{port}/metrics: the workers' request metrics from "
        f"{metrics_dir or '(none: PROMETHEUS_MULTIPROC_DIR is unset)'}; the app's own: "
        f"{app_collector or '(none declared)'}"
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
