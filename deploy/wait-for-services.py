#!/usr/bin/env python3
"""Wait until the app's services accept connections: the hosts of DATABASE_URL and REDIS_URL
(those set), with bounded exponential backoff and jitter. The image's entrypoint runs it before
each role, so start-up order and a slow database never crash-loop a container, whatever the app.

    wait-for-services.py [TIMEOUT]      seconds in all (default 60); exits 1 with the reason

Standard library only: it runs in any app's image. Reachable is all it proves; the app's
/readyz says whether it can use them. A Sentinel URL (`redis+sentinel://user:password@host:port,
host:port/service`) is ready when a Sentinel names a master that answers PING to that user.
A DATABASE_URL naming several servers (libpq's `postgresql://user:password@/db?host=h1,h2&
port=p1,p2&target_session_attrs=read-write`, or `…@h1:p1,h2:p2/db?…`) is ready when one takes a
session as the URL asks: `primary_problem()`, through the image's Postgres driver when it has one.
"""

from __future__ import annotations

import importlib
import os
import random
import socket
import sys
import time
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379}
SENTINEL_PREFIX = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379


def endpoints() -> dict[str, tuple[str, int]]:
    found = {}
    for name in ("DATABASE_URL", "REDIS_URL"):
        if name == "REDIS_URL" and sentinel_url():
            continue  # its Sentinels, then its master: sentinel_master_problem()
        if name == "DATABASE_URL" and database_hosts(os.environ.get(name, "")):
            continue  # a cluster's members: primary_problem()
        url = urlsplit(os.environ.get(name, ""))
        if url.hostname:
            found[name] = (url.hostname, url.port or DEFAULT_PORTS.get(url.scheme, 0))
    return found


def database_hosts(url: str) -> list[tuple[str, int]]:
    """The servers of a libpq URL that names several (`…@host:port,host:port/db`) or names them
    in its query (`…@/db?host=h1,h2&port=p1,p2`, as roles/app writes a cluster's), each with its
    port or the default; empty when it names one the usual way."""
    query = parse_qs(urlsplit(url).query)
    if "host" in query:
        hosts = query["host"][-1].split(",")
        ports = query.get("port", [""])[-1].split(",")
        ports = ports * len(hosts) if len(ports) == 1 else ports
        default = DEFAULT_PORTS["postgresql"]
        return [(h, int(p) if p else default) for h, p in zip(hosts, ports, strict=False)]
    netloc = url.partition("://")[2].partition("/")[0].partition("?")[0]
    hostlist = netloc.rpartition("@")[2]
    if "," not in hostlist:
        return []
    servers = []
    for entry in hostlist.split(","):
        address = urlsplit(f"//{entry}")
        servers.append((address.hostname or "", address.port or DEFAULT_PORTS["postgresql"]))
    return servers


def primary_problem(url: str) -> str | None:
    """None when a server of a multi-host DATABASE_URL takes a session as the URL asks (its
    target_session_attrs: read-write in the stack's), else why not.

    One member answering is not enough: while a cluster starts or changes its primary, the
    standbys answer first, and the roles that follow need the primary (migrations, the app's
    writes; the app itself connects only to a member that takes writes). So libpq decides, as
    it will for the app, through the image's driver; an image without one waits for any member
    to accept connections."""
    for module in ("psycopg2", "psycopg"):
        try:
            driver = importlib.import_module(module)
        except ImportError:
            continue
        try:
            driver.connect(url, connect_timeout=3).close()
        except driver.Error as exc:
            return " ".join(str(exc).split())
        return None
    problems = []
    for host, port in database_hosts(url):
        try:
            socket.create_connection((host, port), timeout=3).close()
            return None
        except OSError as exc:
            problems.append(f"{host}:{port}: {exc.strerror or exc}")
    return "; ".join(problems)


def sentinel_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    return url if url.startswith(SENTINEL_PREFIX) else ""


class RedisReplyError(Exception):
    pass


def redis_command(stream, *args: str):
    """Send one command (RESP) and read its reply: a string, a number, None or a list."""
    stream.write(f"*{len(args)}\r\n".encode())
    for arg in args:
        data = arg.encode()
        stream.write(b"$%d\r\n%s\r\n" % (len(data), data))
    stream.flush()
    return read_reply(stream)


def read_reply(stream):
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the connection closed")
    kind, value = line[:1], line[1:-2].decode()
    if kind == b"-":
        raise RedisReplyError(value)
    if kind == b"+":
        return value
    if kind == b":":
        return int(value)
    if kind == b"$":
        return None if value == "-1" else stream.read(int(value) + 2)[:-2].decode()
    if kind == b"*":
        return None if value == "-1" else [read_reply(stream) for _ in range(int(value))]
    raise ConnectionError(f"not a Redis reply: {line[:40]!r}")


def redis_session(host: str, port: int, username: str, password: str, *command: str):
    """Log in (as the URL's user) and run one command."""
    with socket.create_connection((host, port), timeout=3) as sock:
        stream = sock.makefile("rwb")
        if password:
            redis_command(stream, "AUTH", *([username] if username else []), password)
        return redis_command(stream, *command)


def sentinel_master_problem(url: str) -> str | None:
    """None when a Sentinel names a master that answers PING, else what went wrong (the
    Sentinels and the master share the app's user and password)."""
    netloc, _, path = url[len(SENTINEL_PREFIX) :].partition("?")[0].partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = (unquote(part) for part in userinfo.partition(":"))
    service = unquote(path.strip("/"))
    problem = "no Sentinel is listed"
    for location in hosts.split(","):
        address = urlsplit(f"//{location.strip()}")
        sentinel = (address.hostname or "", address.port or DEFAULT_SENTINEL_PORT)
        try:
            master = redis_session(
                *sentinel, username, password, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", service
            )
        except (OSError, RedisReplyError) as exc:
            problem = f"Sentinel {sentinel[0]}:{sentinel[1]}: {exc}"
            continue
        if not master:
            problem = f"Sentinel {sentinel[0]}:{sentinel[1]} knows no master named {service!r}"
            continue
        try:
            redis_session(master[0], int(master[1]), username, password, "PING")
            return None
        except (OSError, RedisReplyError) as exc:
            problem = f"master {master[0]}:{master[1]}: {exc}"
    return problem


def unreachable(targets: dict[str, tuple[str, int]]) -> dict[str, str]:
    down = {}
    if sentinel_url() and (problem := sentinel_master_problem(sentinel_url())):
        down["REDIS_URL"] = problem
    database_url = os.environ.get("DATABASE_URL", "")
    if database_hosts(database_url) and (problem := primary_problem(database_url)):
        down["DATABASE_URL"] = problem
    for name, (host, port) in targets.items():
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            down[name] = f"{host}:{port}: {exc.strerror or exc}"
    return down


def main(argv: list[str]) -> int:
    timeout = float(argv[0]) if argv and argv[0] else 60.0
    deadline = time.monotonic() + timeout
    targets = endpoints()
    delay = 0.5
    while down := unreachable(targets):
        if time.monotonic() >= deadline:
            reasons = "; ".join(f"{name} ({reason})" for name, reason in down.items())
            print(f"flaskstack: gave up after {timeout:g} s waiting for {reasons}", file=sys.stderr)
            return 1
        # Half of each delay random, so restarting containers do not retry in lockstep.
        pause = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not a secret
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        delay = min(delay * 2, 8.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
