"""`make bench`: measure the stack against its own ceilings (issue 8).

Runs inside a private network namespace (tools/bench/bench.sh makes it), so every server
listens where a single-host deployment puts it; tools/bench/README.md says what is measured and
how. This module runs the figures group by group; the rest of the package:

- figures.py: the table of figures (what each measures, its baseline and target), the profiles.
- stack.py: starts and stops nginx, gunicorn, Postgres and Redis as a host runs them, with
  nginx_config.py (nginx's configuration) and app_data.py (seed data, the logged-in session).
- load.py: the load generators; processes.py: commands, processes, their CPU and memory.
- handshakes.py: figures 10 (nginx's CPU per new TLS connection); profiling.py: --py-spy.
- archiving.py: pgBackRest for figures 12 (WAL archiving off and on).
- results.py: the table `make bench` prints and the JSON it writes.

Every process it starts is stopped by PID at the end, also on failure or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from tools.bench.app_data import api_token, log_in, own_post
from tools.bench.archiving import OFF, PGBACKREST, PgBackRest
from tools.bench.caddy import PORTS as CADDY_PORTS
from tools.bench.caddy import check_same_answers
from tools.bench.figures import (
    APP_CLIENTS,
    ARCHIVING,
    BESIDE_BACKUP,
    COMPRESSED,
    EDGE_CLIENTS,
    EDGE_STREAMS,
    FULL,
    GROWTH,
    HOSTS_PYTHON,
    LATENCY,
    PROFILED,
    REQUEST_METRICS,
    SMOKE,
    SPECS,
    SPIKE_CLIENTS,
    THROUGHPUT,
    Load,
    Profile,
)
from tools.bench.handshakes import measure_handshakes
from tools.bench.layout import APP_ADDRESS, DEFAULT_OUTPUT, NGINX, SITE_HOST
from tools.bench.load import h2load, wrk
from tools.bench.processes import BenchError, CpuMeter, log, memory_mb, run
from tools.bench.profiling import record_profile
from tools.bench.results import Figure, Results, Run
from tools.bench.stack import Stack


class Bench:
    """One run of the benchmark: the figures of figures.py measured on `stack` into `results`."""

    def __init__(
        self,
        profile: Profile,
        work: Path,
        results: Results,
        py_spy: str | None = None,
        unix_sockets: bool = False,
        nginx_http: str = "",
        hosts_python_layers: str = "",
    ) -> None:
        self.profile = profile
        self.hosts_python_layers = hosts_python_layers
        self.work = work
        self.results = results
        self.py_spy = py_spy
        self.meter = CpuMeter()
        self.stack = Stack(work, self.meter, unix_sockets, nginx_http)
        self.cookie = ""
        self.api_token, self.own_post = "", 0  # the writes of figures 12

    def run(self) -> None:
        """Every figure, group by group, in the order their dependencies need."""
        profile, stack = self.profile, self.stack
        stack.start(profile.small_posts)
        self.results.environment.update(stack.description())
        self.cookie = log_in(stack.ca_cert)
        check_same_answers(stack.ca_cert, stack.static_path(SPECS["4"].measures.path))
        log(
            f"load: {profile.repetitions} × {profile.duration} s (+{profile.warmup} s warm-up) "
            f"per figure, {profile.small_posts} posts"
        )
        self.repeat(THROUGHPUT, clients=SPIKE_CLIENTS)
        self.repeat(LATENCY, **self.offered_rate(SPECS["8"].measures))
        if self.py_spy:
            log("py-spy profiles of the app figures (collapsed stacks for a flame graph)")
            for key in PROFILED:
                self.profile_app(key)
        self.memory()
        # Restarts gunicorn with its request metrics off and on.
        self.request_metrics()
        # Restart Postgres and gunicorn: after the figures of the first app run, before the
        # second database (the full backup copies what the cluster holds).
        self.archiving()
        # Restarts gunicorn on another database.
        self.growth()
        self.on_hosts_python()
        # Handshakes last: they restart nginx with one certificate at a time.
        stack.close()
        measure_handshakes(stack, self.results, profile)

    def close(self) -> None:
        self.stack.close()

    def add(self, key: str, **values) -> Figure:
        """Figure `key` of the table, its name and note filled in with `values`."""
        return self.results.add(SPECS[key].figure(**values))

    def repeat(self, keys: tuple[str, ...], **values) -> None:
        """Measure the figures `keys`, interleaving their repetitions so that a noisy minute
        hits them all alike."""
        for key in keys:
            self.add(key, **values)
        for repetition in range(1, self.profile.repetitions + 1):
            for key in keys:
                self.measure(key, repetition)

    def measure(self, key: str, repetition: int) -> None:
        figure = self.results.figures[key]
        result = self.load(SPECS[key].measures)
        figure.runs.append(result)
        log(
            f"  [{repetition}/{self.profile.repetitions}] {key} {figure.name}: "
            f"{result.value:.0f} {figure.unit}, p99 {result.p99_ms:.1f} ms, "
            f"{result.errors} errors"
        )

    def load(self, load: Load) -> Run:
        """One run of `load`, the servers' CPU metered from the end of its warm-up."""
        timing = {
            "duration": self.profile.duration,
            "warmup": self.profile.warmup,
            "meter": self.meter,
        }
        if load.via == "gunicorn":
            url = f"http://{APP_ADDRESS[0]}:{APP_ADDRESS[1]}{load.path}"
            return wrk(url, clients=load.clients, **timing)
        path = self.stack.static_path(load.path) if load.fingerprinted else load.path
        headers, body = {}, None
        if load.json_body is not None:
            path = path.format(post=self.own_post)
            body = self.work / "request-body.json"
            body.write_text(load.json_body)
            headers["content-type"] = "application/json"
            headers["authorization"] = f"Bearer {self.api_token}"
        if load.compressed:
            headers["accept-encoding"] = COMPRESSED
        if load.logged_in:
            headers["cookie"] = self.cookie
        elif load.bypass_cache:
            headers["cookie"] = "bench=uncached"
        rps = self.offered_rate(load)["rate"] if load.half_rate_of else None
        port = 443 if load.edge == "nginx" else CADDY_PORTS["ecdsa"]
        authority = SITE_HOST if port == 443 else f"{SITE_HOST}:{port}"
        return h2load(
            f"https://{authority}{path}",
            self.work,
            clients=load.clients,
            streams=load.streams,
            headers=headers,
            rps=rps,
            port=port,
            data=body,
            **timing,
        )

    def offered_rate(self, load: Load) -> dict[str, int]:
        """A fixed rate: per client, half the median req/s of the figure `load` halves."""
        half = self.results.figures[load.half_rate_of].median / 2
        rate = max(1, round(half / load.clients))
        return {"clients": load.clients, "rate": rate, "offered": load.clients * rate}

    def profile_app(self, key: str) -> None:
        """Sample every gunicorn worker with py-spy while figure `key`'s load runs again."""
        output = DEFAULT_OUTPUT.parent / f"profile-{key}.txt"
        duration = self.profile.duration + self.profile.warmup
        master = self.stack.app.process.pid
        load = SPECS[key].measures
        summary = record_profile(self.py_spy, master, output, duration, lambda: self.load(load))
        self.results.profiles[key] = {"collapsed_stacks": str(output), **summary}
        log(f"  profile of {key} ({summary['samples']} samples): {output}")

    def memory(self) -> None:
        """Figures 11: gunicorn's master and workers after the load of 1-8."""
        log("memory of gunicorn after the load")
        master = memory_mb(self.stack.app.process.pid)
        workers = [memory_mb(pid) for pid in self.stack.app.workers()]
        self.add("11a").runs.append(Run(master["rss_mb"], detail=master))
        rss, pss = (sum(worker[kind] for worker in workers) for kind in ("rss_mb", "pss_mb"))
        figure = self.add("11b", workers=len(workers), rss=rss, pss=pss)
        figure.runs += [Run(worker["rss_mb"], detail=worker) for worker in workers]

    def on_hosts_python(self) -> None:
        """Figures H: the app figures again on the interpreter and virtualenv the hosts run,
        so the ratios of what ships are measured too (this machine's Python may differ)."""
        if not self.hosts_python_layers:
            log("the hosts' Python: skipped (no layers: run make bench, or bench.sh)")
            return
        version = self.stack.use_hosts_python(self.hosts_python_layers)  # small database
        log(f"the hosts' Python: {version}, in a chroot of a Debian 13 host's root")
        self.results.environment["hosts_python"] = version
        self.repeat(HOSTS_PYTHON, python=version.split(" (")[0])

    def growth(self) -> None:
        """Figures 9: the anonymous page and the API list on a database of `small_posts` and
        on one of `large_posts`, gunicorn restarted on the other database between them. The
        two alternate A B, B A, A B… across the repetitions, so that the machine's drift over
        the minutes hits both alike (one-sided before-and-after runs did not: README)."""
        profile = self.profile
        log(
            f"growth: a second database with {profile.large_posts} posts "
            "(bulk insert, VACUUM ANALYZE)"
        )
        large_url = self.stack.add_database("flaskstack_bench_large", profile.large_posts)
        urls = {"small": self.stack.database_url, "large": large_url}
        small, large = (f"{posts // 1000}k" for posts in (profile.small_posts, profile.large_posts))
        for key in GROWTH:
            self.add(key, small=small, large=large)
        databases = [
            (url, [key for key in GROWTH if SPECS[key].measures.posts == posts])
            for posts, url in urls.items()
        ]
        running = urls["small"]
        for repetition in range(1, profile.repetitions + 1):
            for url, keys in databases:
                if url != running:
                    self.stack.stop_app()
                    self.stack.start_app(url)
                    running = url
                for key in keys:
                    self.measure(key, repetition)
            databases.reverse()

    def request_metrics(self) -> None:
        """Figures 13: the anonymous page with gunicorn's request metrics off and on, gunicorn
        restarted for each, the conditions in turns as in growth()."""
        log("request metrics: gunicorn without and with PROMETHEUS_MULTIPROC_DIR")
        for key in REQUEST_METRICS:  # notes filled in at the end: they tell what was counted
            self.results.add(replace(SPECS[key], note="").figure())
        conditions = [
            (on, [key for key in REQUEST_METRICS if SPECS[key].measures.metrics == on])
            for on in (False, True)
        ]
        for repetition in range(1, self.profile.repetitions + 1):
            for on, keys in conditions:
                self.stack.stop_app()
                self.stack.start_app(self.stack.database_url, metrics=on)
                for key in keys:
                    self.measure(key, repetition)
                    if on:
                        counted = self.stack.requests_counted()
                        self.results.figures[key].runs[-1].detail["requests_counted"] = counted
            conditions.reverse()
        self.stack.stop_app()
        self.stack.start_app(self.stack.database_url)
        for key in REQUEST_METRICS:
            runs = self.results.figures[key].runs
            counted = sum(run.detail.get("requests_counted", 0) for run in runs)
            self.results.figures[key].note = SPECS[key].note.format(counted=counted)

    def archiving(self) -> None:
        """Figures 12: the anonymous page and a comment written through the API, with
        Postgres' WAL archiving off and on (pgBackRest, as roles/pgbackrest configures it),
        Postgres and gunicorn restarted for each. The conditions alternate A B, B A, A B… as
        in growth(); the first run of BESIDE_BACKUP has a full backup beside it."""
        log("WAL archiving: pgBackRest as roles/pgbackrest sets it up, a repository on disk")
        archive = self.stack.pgbackrest()
        version = run(PGBACKREST, "version", capture_output=True).stdout.strip()
        self.results.environment["pgbackrest"] = version
        archive.create_stanza()
        self.api_token = api_token(self.stack.ca_cert)
        self.own_post = own_post(self.stack.database_url)
        for key in ARCHIVING:  # notes filled in at the end: they tell what the runs did
            self.results.add(replace(SPECS[key], note="").figure())
        conditions = [
            (on, [key for key in ARCHIVING if SPECS[key].measures.archiving == on])
            for on in (False, True)
        ]
        backup = {}
        # None: Postgres restarts before the first condition too, so that off and on each
        # follow a restart as often (a restart empties Postgres' buffers and gunicorn's pools).
        archiving = None
        for repetition in range(1, self.profile.repetitions + 1):
            for on, keys in conditions:
                if on != archiving:
                    self.switch_archiving(archive, on)
                    archiving = on
                for key in keys:
                    beside = key == BESIDE_BACKUP and not backup
                    backup = self.measure_archived(archive, key, repetition, beside) or backup
            conditions.reverse()
        if archiving:
            self.switch_archiving(archive, False)
        self.describe_archiving(archive, backup)

    def switch_archiving(self, archive: PgBackRest, on: bool) -> None:
        log(f"  Postgres restarted with WAL archiving {'on' if on else 'off'}")
        self.stack.restart_postgres(archive.settings() if on else OFF)
        if on:
            archive.wake_checkpointer()

    def measure_archived(
        self, archive: PgBackRest, key: str, repetition: int, backup: bool
    ) -> dict:
        """measure(), with the WAL written and archived during the load (its warm-up too); a
        failed archive_command is an error of the run. With archiving on, a segment is closed
        in the middle of the measured period: a host archives one at least every
        archive_timeout when there are writes, which is longer than a run. With `backup`, a
        full backup starts when the measured period does; returns its sizes and duration."""
        before = archive.counters()
        on = SPECS[key].measures.archiving
        mid_run, warmup = self.profile.warmup + self.profile.duration / 2, self.profile.warmup
        with ThreadPoolExecutor(max_workers=2) as pool:
            skipped = pool.submit(archive.switch_wal, after=mid_run) if on else None
            full = pool.submit(archive.full_backup, after=warmup) if backup else None
            self.measure(key, repetition)
            skipped = skipped.result() if skipped else 0
            full = full.result() if full else {}
        after = archive.counters()
        measured = self.results.figures[key].runs[-1]
        measured.errors += after["failed"] - before["failed"]
        wal = after["wal_bytes"] - before["wal_bytes"] - skipped
        measured.detail["wal_mb"] = round(wal / 2**20, 3)
        measured.detail["wal_segments_archived"] = after["archived"] - before["archived"]
        measured.detail["archive_failures"] = after["failed"] - before["failed"]
        if full:
            measured.detail["beside_full_backup"] = full
            log(f"  a full backup beside it: {full['database_mb']:.0f} MB, {full['seconds']} s")
        return full

    def describe_archiving(self, archive: PgBackRest, backup: dict) -> None:
        timeout = archive.settings()["archive_timeout"]
        for key in ARCHIVING:
            figure = self.results.figures[key]
            figure.note = SPECS[key].note.format(
                clients=SPECS[key].measures.clients,
                timeout=timeout,
                wal_mb=sum(run.detail["wal_mb"] for run in figure.runs),
                archived=sum(run.detail["wal_segments_archived"] for run in figure.runs),
                **backup,
            )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=os.environ.get("BENCH_SMOKE") == "1",
        help="1-2 s runs, one repetition, 2 000 posts (or BENCH_SMOKE=1)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results ({DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--unix-sockets",
        action="store_true",
        help="the app reaches Postgres and Redis through unix sockets instead of 127.0.0.1",
    )
    parser.add_argument(
        "--nginx-http",
        metavar="DIRECTIVES",
        default="",
        help="http-level nginx directives to try, e.g. 'open_file_cache max=1000;' "
        "(bench-only: added to its own configuration, nginx/ unchanged)",
    )
    parser.add_argument(
        "--hosts-python-layers",
        metavar="LOWERDIR",
        default="",
        help="the overlay layers of the hosts' Python (tools/bench/hosts-python.sh prints "
        "them; bench.sh passes them): without them, figures H are not measured",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy binary: also profile the app figures (written beside the default JSON)",
    )
    return parser.parse_args(argv)


def machine() -> dict:
    """The start of results.json's "environment": what ran the bench, and when."""
    return {
        "nginx": run(NGINX, "-v", capture_output=True).stderr.strip(),
        "openssl": ssl.OPENSSL_VERSION,
        "python": sys.version.split()[0],
        "cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    profile = SMOKE if args.smoke else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on SIGTERM too

    environment = machine()
    settings = {
        **profile.__dict__,
        "app_clients": APP_CLIENTS,
        "edge_clients": EDGE_CLIENTS,
        "edge_streams": EDGE_STREAMS,
    }
    results = Results(profile.name, settings, environment)
    work = Path(tempfile.mkdtemp(prefix="flaskstack-bench-"))
    work.chmod(0o755)  # nginx workers (www-data) read the release's static files
    log(f"work directory {work} (removed at the end)")
    bench = Bench(
        profile,
        work,
        results,
        args.py_spy,
        args.unix_sockets,
        args.nginx_http,
        args.hosts_python_layers,
    )
    if args.nginx_http:
        environment["nginx_http_trial"] = args.nginx_http
    try:
        bench.run()
    except (BenchError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        log(f"failed: {exc} {detail}".strip())
        for error_log in (work / "logs").glob("*error.log"):
            log(f"{error_log.name}: {error_log.read_text()[-1500:]}")
        return 1
    finally:
        bench.close()
        environment["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        shutil.rmtree(work, ignore_errors=True)
    results.write_json(args.output)
    print()
    print(results.table())
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
