"""`make bench`: measure the stack against its own ceilings (issue 8).

Runs inside a private network namespace (tools/bench/bench.sh makes it), so every server
listens where a single-host deployment puts it (nginx on 80/443, gunicorn on 127.0.0.1:8000
and on the unix socket nginx uses) and the configuration is the project's own, rendered the
way the Ansible role renders it:

- nginx: Debian's nginx.conf (paths moved into the work directory), nginx/snippets, the
  nginx/templates filled from nginx/defaults.env + nginx/detect-features.sh, the upstream from
  the role's upstream.conf.j2 and defaults. Bench-only differences: certificates from a
  throwaway CA instead of /etc/letsencrypt, and ceiling-location.conf inserted into the sites.
- the app: a release built by deploy/build-release.sh (fingerprinted, precompressed static
  files), run by gunicorn with deploy/gunicorn.conf.py and APP_ENV=production.
- Postgres and Redis: throwaway servers (tools/servers.py) given the roles' settings (Redis ACL
  user, AOF everysec, maxmemory; Postgres scram-sha-256, slow-query log).

Every process it starts is stopped by PID at the end, also on failure or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import urllib3
import yaml

from tools.bench.results import Figure, Results, Run, Target
from tools.servers import PostgresServer, RedisServer, wait_for_port

REPO = Path(__file__).resolve().parents[2]

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE_HOST = "flaskstack.test"
SITE_ALIASES = "www.flaskstack.test"
CERT_NAME = SITE_HOST
APP_ADDRESS = ("127.0.0.1", 8000)  # group_vars/all.yml: app_port, loopback on a single host
# nginx reaches gunicorn through a unix socket on a single host (group_vars/all.yml:
# app_unix_socket); the bench's is in its work directory. Figure 2 uses the TCP address.
APP_SOCKET = "app.sock"
DEFAULT_OUTPUT = REPO / ".build" / "bench" / "results.json"
BENCH_USER = "bench"
BENCH_PASSWORD = "bench password that is long enough"  # noqa: S105 - a throwaway database's

# Load shapes. App figures: 16 clients, one request at a time each (16 busy browsers);
# nginx-only figures: enough parallel streams to saturate nginx, not the app.
APP_CLIENTS = 16
EDGE_CLIENTS, EDGE_STREAMS = 32, 8
LATENCY_CLIENTS = 8
# New connections of each kind per round when measuring handshakes (full, resumed, no TLS
# alternate round by round).
HANDSHAKE_ROUND = 50
# A stream that failed this close to the end of a run was cut off by h2load stopping.
CUT_OFF_WINDOW_US = 50_000


@dataclass(frozen=True)
class Profile:
    name: str
    duration: int  # seconds per measured run
    warmup: int  # seconds of load before each measured run
    repetitions: int
    small_posts: int
    large_posts: int
    handshakes: int  # new TLS connections per handshake measurement


FULL = Profile(
    "full",
    duration=10,
    warmup=2,
    repetitions=3,
    small_posts=1000,
    large_posts=100_000,
    handshakes=2000,
)
SMOKE = Profile(
    "smoke", duration=1, warmup=1, repetitions=1, small_posts=1000, large_posts=2000, handshakes=200
)


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    return subprocess.run([str(a) for a in args], text=True, **kwargs)


class BenchError(RuntimeError):
    pass


# ---- configuration from the repository's own sources -----------------------------------------


def role_defaults(role: str) -> dict:
    return yaml.safe_load((REPO / f"ansible/roles/{role}/defaults/main.yml").read_text())


def nginx_placeholders(static_root: Path) -> dict[str, str]:
    """What roles/nginx/tasks/features.yml collects: defaults.env, detected features, site."""
    values = {}
    for line in (REPO / "nginx/defaults.env").read_text().splitlines():
        match = re.match(r'^([A-Z][A-Z0-9_]*)="?(.*?)"?$', line)
        if match:
            values[match[1]] = match[2]
    detected = run("sh", REPO / "nginx/detect-features.sh", capture_output=True).stdout
    values.update(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", detected, flags=re.MULTILINE))
    values.update(
        SITE_HOST=SITE_HOST,
        SITE_ALIASES=SITE_ALIASES,
        TLS_CERT_NAME=CERT_NAME,
        STATIC_ROOT=str(static_root).rstrip("/"),
    )
    return values


def fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    missing = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", template))
    if missing:
        raise BenchError(f"no value for nginx placeholders: {', '.join(sorted(missing))}")
    return template


def replace_once(text: str, old: str, new: str) -> str:
    """Edit a file we do not own, loudly: if it changed shape, stop instead of measuring
    something else."""
    if text.count(old) != 1:
        raise BenchError(f"expected exactly one {old!r} in the nginx configuration")
    return text.replace(old, new)


class NginxConfig:
    """A complete nginx configuration directory, laid out like /etc/nginx on a host."""

    def __init__(
        self, root: Path, certs: Path, static_root: Path, logs: Path, extra: str = ""
    ) -> None:
        """`root` is a new directory in the bench's work directory (next to APP_SOCKET)."""
        self.root = root
        self.conf = root / "nginx.conf"
        self.pid_file = root / "nginx.pid"
        self.error_log = logs / f"nginx-{root.name}-error.log"
        root.mkdir(parents=True)
        shutil.copytree(REPO / "nginx/snippets", root / "flaskstack/snippets")
        (root / "conf.d").mkdir()
        # Bench only: nginx closes a connection after 1000 requests, a browser then opens a new
        # one, but h2load's timed mode does not (the load would stop). A handshake per 1000
        # requests is 0.1 % of the work either way.
        (root / "conf.d/zz-bench.conf").write_text("keepalive_requests 1000000;\n")
        if extra:  # --nginx-http: a setting on trial, not (yet) in nginx/
            (root / "conf.d/zz-bench-trial.conf").write_text(extra + "\n")
        (root / "bench").mkdir()
        shutil.copy(BENCH_DIR / "ceiling-location.conf", root / "bench")

        main = Path("/etc/nginx/nginx.conf").read_text()
        main = replace_once(main, "pid /run/nginx.pid;", f"pid {self.pid_file};")
        main = replace_once(
            main, "error_log /var/log/nginx/error.log;", f"error_log {self.error_log};"
        )
        main = replace_once(
            main,
            "access_log /var/log/nginx/access.log;",
            f"access_log {logs}/nginx-{root.name}-access.log;",
        )
        main = replace_once(
            main, "include /etc/nginx/conf.d/*.conf;", f"include {root}/conf.d/*.conf;"
        )
        # The role deletes the distribution's default site; nothing else lives there.
        main = replace_once(main, "include /etc/nginx/sites-enabled/*;", "")
        self.conf.write_text(main)

        defaults = role_defaults("nginx")
        upstream = jinja2.Template(
            (REPO / "ansible/roles/nginx/templates/upstream.conf.j2").read_text()
        )
        (root / "flaskstack/upstream.conf").write_text(
            upstream.render(
                ansible_managed="rendered by tools/bench/bench.py",
                nginx_upstream_servers=[f"unix:{root.parent / APP_SOCKET}"],
                nginx_upstream_max_fails=defaults["nginx_upstream_max_fails"],
                nginx_upstream_fail_timeout=defaults["nginx_upstream_fail_timeout"],
                nginx_upstream_keepalive=defaults["nginx_upstream_keepalive"],
            )
        )

        values = nginx_placeholders(static_root)
        self.features = {k: values[k] for k in ("TLS_CURVES", "HTTP_PROTOCOLS", "BROTLI_STATIC")}
        for name in ("flaskstack.conf", "flaskstack-limits.conf", "flaskstack-https.conf"):
            text = fill((REPO / f"nginx/templates/{name}.template").read_text(), values)
            if name == "flaskstack.conf":
                # The same fixed 200 without TLS: what a connection costs nginx apart from TLS.
                text = replace_once(
                    text,
                    "    location / {\n        return 301",
                    f"    include {root}/bench/ceiling-location.conf;\n\n"
                    "    location / {\n        return 301",
                )
            if name == "flaskstack-https.conf":
                text = text.replace("/etc/letsencrypt/live/", f"{certs}/live/")
                # The site's own (buffered) access log goes where nginx.conf's went.
                text = replace_once(
                    text,
                    "access_log /var/log/nginx/access.log ",
                    f"access_log {logs}/nginx-{root.name}-access.log ",
                )
                text = replace_once(
                    text,
                    "    location /static/ {",
                    f"    include {root}/bench/ceiling-location.conf;\n\n    location /static/ {{",
                )
            (root / "conf.d" / name).write_text(text)

    def only_certificate(self, kind: str) -> None:
        """Serve one certificate type (ecdsa or rsa): the client then cannot choose."""
        https = self.root / "conf.d/flaskstack-https.conf"
        other = {"ecdsa": "-rsa/", "rsa": "-ecdsa/"}[kind]
        lines = https.read_text().splitlines(keepends=True)
        kept = [
            line
            for line in lines
            if not (line.lstrip().startswith("ssl_certificate") and other in line)
        ]
        if len(lines) - len(kept) != 2:
            raise BenchError(f"could not drop the {other.strip('-/')} certificate lines")
        https.write_text("".join(kept))


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and an ECDSA P-256 + an RSA 2048 certificate for the site's names."""
    directory.mkdir(parents=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    quiet = {"capture_output": True}
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca_cert,
        "-days",
        "2",
        "-subj",
        "/CN=flaskstack bench CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        **quiet,
    )
    extensions = directory / "leaf.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{SITE_HOST},DNS:www.{SITE_HOST}\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    algorithms = {
        "ecdsa": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    }
    for kind, options in algorithms.items():
        lineage = directory / "live" / f"{CERT_NAME}-{kind}"
        lineage.mkdir(parents=True)
        key, csr, cert = lineage / "privkey.pem", lineage / "csr.pem", lineage / "cert.pem"
        run("openssl", "genpkey", *options, "-out", key, **quiet)
        run(
            "openssl", "req", "-new", "-key", key, "-subj", f"/CN={SITE_HOST}", "-out", csr, **quiet
        )
        run(
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca_cert,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            extensions,
            "-out",
            cert,
            **quiet,
        )
        # Like Let's Encrypt's fullchain.pem: the leaf, then the issuer.
        (lineage / "fullchain.pem").write_text(cert.read_text() + ca_cert.read_text())
    return ca_cert


# ---- processes --------------------------------------------------------------------------------


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """Time the processes' threads have run on a CPU (user and kernel), from
    /proc/<pid>/task/*/schedstat: in nanoseconds, where utime + stime count 10 ms clock ticks."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, ended ones included: its threads' time
    on a CPU (schedstat, nanoseconds), the cutime + cstime of the children it has waited for
    (recycled gunicorn workers, ended Postgres backends; clock ticks), and the same for each
    child still alive."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = cpu_seconds([pid])
    except OSError:  # ended in the meantime: its parent's cutime has it now
        return 0.0
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    return own + reaped + sum(tree_cpu_seconds(child) for child in children_of(pid))


class CpuMeter:
    """CPU seconds each server (its whole process tree) spends during a measured period:
    divided by the requests answered, the CPU cost of a request by component. Unlike req/s,
    this hardly moves when other work on the machine takes CPU away from the stack."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self._before: dict[str, float] = {}

    def track(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def start(self) -> None:
        self._before = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}

    def per_request_ms(self, requests: int) -> dict[str, float]:
        used = {name: tree_cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        return {name: round(cpu * 1000 / max(requests, 1), 3) for name, cpu in used.items()}


def memory_mb(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)[1])
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)[1])
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024}


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
    suite's no-fsync ones."""

    def settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.tmp),
            "password_encryption": "scram-sha-256",
            "log_min_duration_statement": str(
                role_defaults("postgres")["postgres_log_min_duration_statement"]
            ),
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


# ---- load generators --------------------------------------------------------------------------


def read_request_log(
    path: Path, duration_s: int, request_interval_s: float = 0
) -> tuple[list[int], int]:
    """h2load's per-request log, which holds the measured period only (not the warm-up).
    Returns the latencies (µs) of answered requests, sorted, and the number of streams that
    failed before the end of the run: h2load stops its clients at the end, and the streams
    then in flight fail too, without the server having done anything wrong."""
    rows = []
    with path.open() as lines:
        for line in lines:
            start, status, duration = map(int, line.split("\t")[:3])
            rows.append((start, status, duration))
    if not rows:
        raise BenchError(f"no requests logged in {path}")
    begin = min(start for start, _, _ in rows)
    end = max(start + duration for start, _, duration in rows)
    # h2load's timed mode never reconnects: a connection the server closed stays closed.
    # At a fixed rate (--rps) the first and last requests are up to one interval from the ends.
    if end - begin < (0.8 * duration_s - request_interval_s) * 1e6:
        raise BenchError(f"the load stopped after {(end - begin) / 1e6:.1f} s of {duration_s} s")
    latencies = sorted(duration for _, status, duration in rows if status != -1)
    failed_before_the_end = sum(
        1
        for start, status, duration in rows
        if status == -1 and end - (start + duration) > CUT_OFF_WINDOW_US
    )
    return latencies, failed_before_the_end


def percentile(sorted_values: list[int], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))] / 1000


def h2load(
    url: str,
    work: Path,
    *,
    clients: int,
    streams: int = 1,
    duration: int,
    warmup: int,
    headers: dict[str, str] | None = None,
    rps: int | None = None,
    meter: CpuMeter | None = None,
) -> Run:
    """HTTP/2 over TLS to nginx (SNI and Host are the site's name, the TCP peer is loopback).
    With `meter`, the servers' CPU is measured from the end of the warm-up to the end."""
    log_file = work / "h2load-requests.tsv"
    log_file.unlink(missing_ok=True)
    command = [
        "h2load",
        "--connect-to=127.0.0.1:443",
        f"-c{clients}",
        f"-m{streams}",
        # One client thread: h2load stops each thread's clients on that thread's own clock, so
        # a second thread would cut off streams in the middle of the other's run.
        "-t1",
        f"-D{duration}",
        f"--warm-up-time={warmup}",
        f"--log-file={log_file}",
    ]
    if rps:
        command.append(f"--rps={rps}")
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    result = _run_metered([*command, url], warmup, duration, meter)
    output = result.stdout
    summary = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", output)
    counts = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if result.returncode != 0 or not (summary and counts and codes):
        raise BenchError(
            f"h2load failed ({result.returncode}): {output[-800:]} {result.stderr[-400:]}"
        )
    _, done, _, failed, _, timeout = map(int, counts.groups())
    ok, *not_ok = map(int, codes.groups())
    latencies, failed_before_the_end = read_request_log(log_file, duration, 1 / rps if rps else 0)
    errors = failed_before_the_end + timeout + sum(not_ok)
    cpu = {"cpu_ms_per_request": meter.per_request_ms(done)} if meter else {}
    return Run(
        value=float(summary[1]),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        requests=done,
        errors=errors,
        detail={
            "2xx": ok,
            "3xx_4xx_5xx": not_ok,
            "failed_streams": failed,
            "cut_off_at_the_end": failed - failed_before_the_end,
            **cpu,
            # h2load's own account of what went wrong, kept for the JSON.
            **({"output": output[-1500:]} if errors else {}),
        },
    )


def _run_metered(
    command: list[str], warmup: int, duration: int, meter: CpuMeter | None
) -> subprocess.CompletedProcess:
    """Run a load generator; with `meter`, start it once the warm-up is over."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if meter:
            time.sleep(warmup)
            meter.start()
        stdout, stderr = process.communicate(timeout=duration + warmup + 60)
    finally:
        stop(process, signal.SIGKILL, timeout=5)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def wrk(
    url: str, *, clients: int, duration: int, warmup: int, meter: CpuMeter | None = None
) -> Run:
    """HTTP/1.1 straight to gunicorn (its sync workers close every connection, which wrk
    handles and h2load's timed mode does not)."""
    base = ["wrk", "-t1", f"-c{clients}"]
    subprocess.run(
        [*base, f"-d{warmup}s", url], capture_output=True, check=True, timeout=warmup + 60
    )
    result = _run_metered([*base, f"-d{duration}s", "--latency", url], 0, duration, meter)
    output = result.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    done = re.search(r"(\d+) requests in", output)
    if result.returncode != 0 or not (rate and done):
        raise BenchError(
            f"wrk failed ({result.returncode}): {output[-800:]} {result.stderr[-400:]}"
        )

    def ms(percent: str) -> float:
        value, unit = re.search(
            rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE
        ).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    errors += int(non_2xx[1]) if non_2xx else 0
    return Run(
        value=float(rate[1]),
        p50_ms=ms("50"),
        p99_ms=ms("99"),
        requests=int(done[1]),
        errors=errors,
        detail={"cpu_ms_per_request": meter.per_request_ms(int(done[1]))} if meter else {},
    )


class TlsClient:
    """New TLS 1.3 connections, one HTTP/1.1 request each, like a browser's first request.
    Resuming, each connection offers the session of the one before (a chain, so every offer
    is of a live session, as a returning browser's is)."""

    REQUEST = (
        f"GET /__bench/ceiling HTTP/1.1\r\nHost: {SITE_HOST}\r\nConnection: close\r\n\r\n".encode()
    )

    def __init__(self, ca_cert: Path) -> None:
        self.context = ssl.create_default_context(cafile=str(ca_cert))
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.set_alpn_protocols(["http/1.1"])
        self.session = None

    def connect(self, resume: bool) -> bool:
        """One connection; returns whether it resumed a session."""
        with socket.create_connection(("127.0.0.1", 443)) as raw:
            offered = self.session if resume else None
            with self.context.wrap_socket(raw, server_hostname=SITE_HOST, session=offered) as tls:
                fetch_fixed_200(tls)
                self.session = tls.session  # TLS 1.3 tickets come after the handshake: read first
                return tls.session_reused


def fetch_fixed_200(connection: socket.socket) -> None:
    """Send TlsClient's request on a connection and read the answer to its end (a 200)."""
    connection.sendall(TlsClient.REQUEST)
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"unexpected answer: {answer[:80]!r}")


def new_plain_connection() -> None:
    """The same request as TlsClient's without TLS (port 80, the same fixed 200)."""
    with socket.create_connection(("127.0.0.1", 80)) as plain:
        fetch_fixed_200(plain)


# ---- the app ----------------------------------------------------------------------------------


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
    run(
        VENV_BIN / "python",
        "-m",
        "flask",
        "--app",
        "app",
        "db",
        "upgrade",
        cwd=release,
        env=env,
        capture_output=True,
    )


def with_database(database_url: str, name: str) -> str:
    """The same server and credentials, another database (TCP or unix-socket URL alike)."""
    return urllib.parse.urlsplit(database_url)._replace(path=f"/{name}").geturl()


def seed_posts(database_url: str, total: int) -> None:
    """Bulk insert (SQL, not the ORM) until `total` posts exist: ten authors, one post in 50
    soft-deleted, a paragraph of text each."""
    import psycopg2

    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM posts")
        existing = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO posts (author_id, title, body, created_at, deleted_at)
            SELECT (SELECT min(id) FROM users) + n %% 10,
                   'Post number ' || n,
                   repeat('Lorem ipsum dolor sit amet, consectetur adipiscing elit. ', 12),
                   now() - make_interval(secs => %(total)s - n),
                   CASE WHEN n %% 50 = 0 THEN now() END
            FROM generate_series(%(first)s, %(total)s) AS n
            """,
            {"first": existing + 1, "total": total},
        )
    connection.close()
    # As after a bulk load in production: fresh statistics and visibility map.
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE posts")
    connection.close()


def seed_users(database_url: str) -> None:
    import psycopg2
    from werkzeug.security import generate_password_hash

    password_hash = generate_password_hash(BENCH_PASSWORD)
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO users (username, email, password_hash, is_admin, created_at)
            SELECT CASE WHEN n = 0 THEN %(user)s ELSE 'author' || n END,
                   CASE WHEN n = 0 THEN %(user)s ELSE 'author' || n END || '@example.org',
                   %(hash)s, false, now()
            FROM generate_series(0, 9) AS n
            """,
            {"user": BENCH_USER, "hash": password_hash},
        )
    connection.close()


def log_in(ca_cert: Path) -> str:
    """Log in through nginx with the real form, as a browser does; returns the Cookie header."""
    pool = urllib3.HTTPSConnectionPool(
        "127.0.0.1",
        443,
        server_hostname=SITE_HOST,
        assert_hostname=SITE_HOST,
        ca_certs=str(ca_cert),
    )
    base = {"Host": SITE_HOST}
    page = pool.request("GET", "/login", headers=base, redirect=False)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.data.decode())[1]
    answer = pool.request(
        "POST",
        "/login",
        body=urllib.parse.urlencode(
            {"csrf_token": token, "username": BENCH_USER, "password": BENCH_PASSWORD}
        ),
        headers={
            **base,
            "Cookie": cookie,
            "Referer": f"https://{SITE_HOST}/login",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        redirect=False,
    )
    if answer.status != 302 or "Set-Cookie" not in answer.headers:
        raise BenchError(f"log-in failed: {answer.status} {answer.data[:300]!r}")
    cookie = answer.headers["Set-Cookie"].split(";", 1)[0]
    home = pool.request("GET", "/", headers={**base, "Cookie": cookie}, redirect=False)
    if home.status != 200 or "Log out" not in home.data.decode():
        raise BenchError("the session cookie does not log in")
    pool.close()
    return cookie


class Gunicorn:
    def __init__(self, release: Path, env: dict[str, str], log_path: Path) -> None:
        self.log_file = log_path.open("ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py"],
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


# ---- the benchmark ---------------------------------------------------------------------------


def frame_package(frame: str) -> str:
    """py-spy's "Class.function (package/module.py:line)" → the package (or template) it is in.
    py-spy writes paths relative to sys.path, so the first component names the package."""
    if frame.startswith("process "):
        return "(no Python frame: native code or the process itself)"
    location = frame.rsplit("(", 1)[-1].rstrip(")").rsplit(":", 1)[0]
    if location.endswith(".html"):
        return "templates (Jinja)"
    return location.split("/", 1)[0].removesuffix(".py")


def summarize_profile(collapsed: Path, top: int = 12) -> dict:
    """Self time by package, and the functions with the most inclusive time."""
    by_package: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        total += samples
        package = frame_package(frames[-1])
        by_package[package] = by_package.get(package, 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    if not total:
        raise BenchError(f"py-spy recorded no samples in {collapsed}")

    def share(counts: dict[str, int]) -> dict[str, float]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return {name: round(100 * samples / total, 1) for name, samples in ranked}

    return {
        "samples": total,
        "self_by_package_%": share(by_package),
        "inclusive_%": share(inclusive),
    }


class Bench:
    def __init__(
        self,
        profile: Profile,
        work: Path,
        results: Results,
        py_spy: str | None = None,
        unix_sockets: bool = False,
        nginx_http: str = "",
    ) -> None:
        self.profile = profile
        self.work = work
        self.results = results
        self.py_spy = py_spy
        self.unix_sockets = unix_sockets
        self.nginx_http = nginx_http
        self.cleanup = contextlib.ExitStack()
        self.meter = CpuMeter()
        self.app: Gunicorn | None = None

    def profile_app(self, key: str, url_path: str, master: int, headers: dict[str, str]) -> None:
        """Sample every gunicorn worker with py-spy while figure `key`'s load runs again."""
        output = DEFAULT_OUTPUT.parent / f"profile-{key}.txt"
        output.parent.mkdir(parents=True, exist_ok=True)
        duration = self.profile.duration + self.profile.warmup
        recorder = subprocess.Popen(
            [self.py_spy, "record", "--pid", str(master), "--subprocesses", "--nonblocking",
             "--format", "raw", "--duration", str(duration), "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            self.load(url_path, clients=APP_CLIENTS, headers=headers)
            recorder.wait(timeout=duration + 60)
        finally:
            stop(recorder, signal.SIGINT)
        summary = summarize_profile(output)
        self.results.profiles[key] = {"collapsed_stacks": str(output), **summary}
        log(f"  profile of {key} ({summary['samples']} samples): {output}")

    def load(self, url_path: str, **options) -> Run:
        options.setdefault("duration", self.profile.duration)
        options.setdefault("warmup", self.profile.warmup)
        options.setdefault("meter", self.meter)
        return h2load(f"https://{SITE_HOST}{url_path}", self.work, **options)

    def repeat(self, measurements: dict[str, callable]) -> None:
        """Interleave the figures' repetitions, so that a noisy minute hits them all alike."""
        for repetition in range(1, self.profile.repetitions + 1):
            for key, measure in measurements.items():
                self.measure(key, measure, repetition)

    def measure(self, key: str, measure: callable, repetition: int) -> None:
        figure = self.results.figures[key]
        result = measure()
        figure.runs.append(result)
        log(
            f"  [{repetition}/{self.profile.repetitions}] {key} {figure.name}: "
            f"{result.value:.0f} {figure.unit}, p99 {result.p99_ms:.1f} ms, "
            f"{result.errors} errors"
        )

    def start_app(self, database_url: str) -> Gunicorn:
        """gunicorn with the stack's config on `database_url`, its CPU metered as "app"."""
        self.app = Gunicorn(
            self.app_release, {**self.app_env, "DATABASE_URL": database_url}, self.app_log
        )
        self.meter.track("app", self.app.process.pid)
        return self.app

    def stop_app(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    def growth(self, postgres: PostgresServer, small_url: str, headers: dict[str, str]) -> None:
        """Figure 9: the anonymous page and the API list on a database of `small_posts` and
        on one of `large_posts`, gunicorn restarted on the other database between them. The
        two alternate A B, B A, A B… across the repetitions, so that the machine's drift over
        the minutes (which moved one-sided before-and-after runs by up to 35 %) hits both."""
        profile = self.profile
        large_url = with_database(small_url, "flaskstack_bench_large")
        log(
            f"growth: a second database with {profile.large_posts} posts "
            "(bulk insert, VACUUM ANALYZE)"
        )
        postgres.create_database("flaskstack_bench_large")
        migrate(self.app_release, {**self.app_env, "DATABASE_URL": large_url})
        seed_users(large_url)
        seed_posts(large_url, profile.large_posts)
        small, large = (f"{posts // 1000}k" for posts in (profile.small_posts, profile.large_posts))
        add = self.results.add
        grown = Target(">=", 0.90, "ratio")
        add(Figure("9a", f"anonymous page / at {small} posts", "req/s"))
        add(Figure("9b", f"anonymous page / at {large} posts", "req/s", "9a", grown))
        add(Figure("9c", f"API list at {small} posts", "req/s"))
        add(Figure("9d", f"API list at {large} posts", "req/s", "9c", grown))

        def page() -> Run:
            return self.load("/", clients=APP_CLIENTS, headers=headers)

        def api() -> Run:
            return self.load("/api/v1/posts", clients=APP_CLIENTS, headers=headers)

        databases = [(small_url, {"9a": page, "9c": api}), (large_url, {"9b": page, "9d": api})]
        running = small_url
        for repetition in range(1, profile.repetitions + 1):
            for database_url, measurements in databases:
                if database_url != running:
                    self.stop_app()
                    self.start_app(database_url)
                    running = database_url
                for key, measure in measurements.items():
                    self.measure(key, measure, repetition)
            databases.reverse()

    def run(self) -> None:
        profile, work, results, cleanup = self.profile, self.work, self.results, self.cleanup
        logs = work / "logs"
        logs.mkdir()
        log("certificates from a throwaway CA (ECDSA P-256, RSA 2048)")
        ca_cert = make_certificates(work / "certs")
        log("release: deploy/build-release.sh")
        release = build_release(work)
        static_root = release / "app/static"
        manifest = json.loads((static_root / "dist/manifest.json").read_text())
        css_path = f"/static/dist/{manifest['css/site.css']}"

        log("Postgres and Redis with the roles' settings")
        postgres = DeploymentPostgres(password=secrets.token_hex(16))
        cleanup.callback(postgres.close)
        postgres.start()
        postgres.create_database()
        redis_server = UnixSocketRedis(password=secrets.token_hex(16))
        cleanup.callback(redis_server.close)
        redis_server.start()
        redis_url = configure_redis_like_the_role(redis_server)
        database_url = postgres.url
        if self.unix_sockets:
            database_url, redis_url = unix_socket_urls(
                database_url, redis_url, postgres, redis_server
            )

        env = {
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
        log("migrations (flask db upgrade) and seed data")
        migrate(release, env)
        seed_users(postgres.url)
        seed_posts(postgres.url, profile.small_posts)

        log("gunicorn (deploy/gunicorn.conf.py) and nginx (nginx/)")
        self.app_release, self.app_env, self.app_log = release, env, logs / "gunicorn.log"
        cleanup.callback(self.stop_app)
        gunicorn = self.start_app(database_url)
        config = NginxConfig(work / "nginx", work / "certs", static_root, logs, self.nginx_http)
        edge = cleanup.enter_context(nginx(config))
        for name, pid in (
            ("postgres", postgres.process.pid),
            ("redis", redis_server.process.pid),
            ("nginx", edge.pid),
        ):
            self.meter.track(name, pid)
        results.environment.update(
            nginx_features=config.features,
            gunicorn_workers=len(gunicorn.workers()),
            app_to_postgres_and_redis="unix sockets" if self.unix_sockets else "TCP (127.0.0.1)",
        )
        cookie = log_in(ca_cert)

        add = results.add
        add(Figure("1", "ceiling: nginx fixed 200", "req/s"))
        add(Figure("2", "bare app: gunicorn /healthz", "req/s"))
        add(Figure("3", "proxied app: nginx → /healthz", "req/s", "2", Target(">=", 0.85, "ratio")))
        add(Figure("4", "static: fingerprinted CSS", "req/s", "1", Target(">=", 0.85, "ratio")))
        add(Figure("5", "anonymous page /", "req/s", "2", Target(">=", 0.40, "ratio")))
        add(Figure("6", "logged-in page /", "req/s", "5", Target(">=", 0.85, "ratio")))
        add(Figure("7", "API list /api/v1/posts", "req/s", "2", Target(">=", 0.40, "ratio")))
        compressed = {"accept-encoding": "gzip, deflate, br"}
        edge_load = {"clients": EDGE_CLIENTS, "streams": EDGE_STREAMS}
        log(
            f"load: {profile.repetitions} × {profile.duration} s (+{profile.warmup} s warm-up) "
            f"per figure, {profile.small_posts} posts"
        )
        self.repeat(
            {
                "1": lambda: self.load("/__bench/ceiling", **edge_load),
                "2": lambda: wrk(
                    f"http://{APP_ADDRESS[0]}:{APP_ADDRESS[1]}/healthz",
                    clients=APP_CLIENTS,
                    duration=profile.duration,
                    warmup=profile.warmup,
                    meter=self.meter,
                ),
                "3": lambda: self.load("/healthz", clients=APP_CLIENTS),
                "4": lambda: self.load(css_path, headers=compressed, **edge_load),
                "5": lambda: self.load("/", clients=APP_CLIENTS, headers=compressed),
                "6": lambda: self.load(
                    "/", clients=APP_CLIENTS, headers={**compressed, "cookie": cookie}
                ),
                "7": lambda: self.load("/api/v1/posts", clients=APP_CLIENTS, headers=compressed),
            }
        )

        half = results.figures["5"].median / 2
        per_client = max(1, round(half / LATENCY_CLIENTS))
        add(
            Figure(
                "8",
                "latency of 5 at half its max",
                "req/s",
                target=Target("<=", 25, "p99_ms"),
                note=f"{LATENCY_CLIENTS} clients × {per_client} req/s = "
                f"{LATENCY_CLIENTS * per_client} req/s offered (half of 5's median)",
            )
        )
        self.repeat(
            {
                "8": lambda: self.load(
                    "/", clients=LATENCY_CLIENTS, rps=per_client, headers=compressed
                )
            }
        )

        if self.py_spy:
            log("py-spy profiles of the app figures (collapsed stacks for a flame graph)")
            self.profile_app("3", "/healthz", gunicorn.process.pid, {})
            self.profile_app("5", "/", gunicorn.process.pid, compressed)
            self.profile_app("6", "/", gunicorn.process.pid, {**compressed, "cookie": cookie})
            self.profile_app("7", "/api/v1/posts", gunicorn.process.pid, compressed)

        log("memory of gunicorn after the load")
        master = memory_mb(gunicorn.process.pid)
        workers = [memory_mb(pid) for pid in gunicorn.workers()]
        add(
            Figure(
                "11a",
                "memory: gunicorn master RSS",
                "MB",
                runs=[Run(master["rss_mb"], detail=master)],
            )
        )
        add(
            Figure(
                "11b",
                f"memory: {len(workers)} workers RSS each",
                "MB",
                runs=[Run(worker["rss_mb"], detail=worker) for worker in workers],
                note=f"all workers: RSS {sum(w['rss_mb'] for w in workers):.0f} MB, "
                f"PSS {sum(w['pss_mb'] for w in workers):.0f} MB "
                "(PSS shares copy-on-write pages between processes)",
            )
        )

        # Restarts gunicorn on another database: after the figures of the first app run.
        self.growth(postgres, database_url, compressed)

        # Handshakes last: they restart nginx with one certificate at a time.
        cleanup.close()
        self.handshakes(ca_cert, static_root, logs)

    def handshakes(self, ca_cert: Path, static_root: Path, logs: Path) -> None:
        count = self.profile.handshakes
        add = self.results.add
        add(
            Figure(
                "10a",
                "TLS 1.3 full handshake, ECDSA",
                "ms CPU/conn",
                note=f"nginx workers' time on a CPU over {count} new connections, one request "
                f"each, the kinds alternating in rounds of {HANDSHAKE_ROUND}",
            )
        )
        add(Figure("10b", "TLS 1.3 full handshake, RSA", "ms CPU/conn"))
        self.results.figures["10a"].baseline = "10b"
        self.results.figures["10a"].target = Target("<=", 0.85, "ratio")
        add(
            Figure(
                "10c", "TLS 1.3 resumed, ECDSA", "ms CPU/conn", "10a", Target("<=", 0.60, "ratio")
            )
        )
        # No target: shows what resumption saves where the signature is expensive.
        add(Figure("10d", "TLS 1.3 resumed, RSA", "ms CPU/conn", "10b"))
        # No target: the part of 10a-10d that is not TLS at all (TCP, HTTP, the log line).
        add(Figure("10e", "no TLS: plain HTTP, same request", "ms CPU/conn", "10a"))
        log(
            f"TLS handshakes: {count} new connections per run, "
            "nginx serving one certificate at a time"
        )
        for kind in ("ecdsa", "rsa"):
            config = NginxConfig(
                self.work / f"nginx-{kind}",
                self.work / "certs",
                static_root,
                logs,
                self.nginx_http,
            )
            config.only_certificate(kind)
            with nginx(config) as edge:
                client = TlsClient(ca_cert)
                for _ in range(50):  # warm-up
                    client.connect(resume=True)
                kinds = (
                    {"10a": False, "10c": True, "10e": None}
                    if kind == "ecdsa"
                    else {"10b": False, "10d": True}
                )
                for repetition in range(1, self.profile.repetitions + 1):
                    self.measure_connections(edge, client, kinds, repetition)
        self.note_tls_alone()

    def measure_connections(
        self, edge: subprocess.Popen, client: TlsClient, kinds: dict[str, bool | None], rep: int
    ) -> None:
        """`count` connections of each kind (full, resumed, or None: no TLS), alternating in
        rounds of HANDSHAKE_ROUND so that a busy moment of the machine hits every kind alike;
        nginx's workers' time on a CPU is summed per kind."""
        count = self.profile.handshakes
        workers = nginx_workers(edge)
        cpu = dict.fromkeys(kinds, 0.0)
        resumed = dict.fromkeys(kinds, 0)
        started = time.monotonic()
        for _ in range(count // HANDSHAKE_ROUND):
            for key, resume in kinds.items():
                before = cpu_seconds(workers)
                for _ in range(HANDSHAKE_ROUND):
                    if resume is None:
                        new_plain_connection()
                    else:
                        resumed[key] += client.connect(resume)
                cpu[key] += cpu_seconds(workers) - before
        elapsed = time.monotonic() - started
        connections = count // HANDSHAKE_ROUND * HANDSHAKE_ROUND
        for key, resume in kinds.items():
            not_resumed = connections - resumed[key] if resume else resumed[key]
            self.results.figures[key].runs.append(
                Run(
                    value=cpu[key] * 1000 / connections,
                    requests=connections,
                    errors=not_resumed,
                    detail={
                        "cpu_s": cpu[key],
                        "connections_per_s": connections * len(kinds) / elapsed,
                        "resumed": resumed[key],
                    },
                )
            )
            log(
                f"  [{rep}/{self.profile.repetitions}] {key}: "
                f"{cpu[key] * 1000 / connections:.3f} ms CPU/conn, "
                f"{resumed[key]}/{connections} resumed"
            )

    def note_tls_alone(self) -> None:
        """What TLS itself costs: 10a-10d less the plain connection of 10e (the TCP accept
        and close, the request, the log line, which are in every figure of 10 alike)."""
        figures = self.results.figures
        plain = figures["10e"].median
        tls = {key: figures[key].median - plain for key in ("10a", "10b", "10c", "10d")}
        if min(tls["10a"], tls["10b"]) <= 0:
            return
        figures["10c"].note = (
            "TLS alone (less 10e): ECDSA full "
            f"{tls['10a']:.3f}, resumed {tls['10c']:.3f} ms ({tls['10c'] / tls['10a']:.2f}×); "
            f"RSA full {tls['10b']:.3f}, resumed {tls['10d']:.3f} ms "
            f"({tls['10d'] / tls['10b']:.2f}×)"
        )


def main(argv: list[str] | None = None) -> int:
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
        "--py-spy",
        metavar="PATH",
        help="py-spy binary: also profile the app figures (written beside the default JSON)",
    )
    args = parser.parse_args(argv)
    profile = SMOKE if args.smoke else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on SIGTERM too

    environment = {
        "nginx": run(NGINX, "-v", capture_output=True).stderr.strip(),
        "openssl": ssl.OPENSSL_VERSION,
        "python": sys.version.split()[0],
        "cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
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
    bench = Bench(profile, work, results, args.py_spy, args.unix_sockets, args.nginx_http)
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
        bench.cleanup.close()
        environment["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        shutil.rmtree(work, ignore_errors=True)
    results.write_json(args.output)
    print()
    print(results.table())
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
