#!/usr/bin/env python3
"""Wait until the app's services accept connections: the hosts of DATABASE_URL and REDIS_URL
(those set), with bounded exponential backoff and jitter. The image's entrypoint runs it before
each role, so start-up order and a slow database never crash-loop a container, whatever the app.

    wait-for-services.py [TIMEOUT]      seconds in all (default 60); exits 1 with the reason

Standard library only: it runs in any app's image. Reachable is all it proves; the app's
/readyz says whether it can use them.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time
from urllib.parse import urlsplit

DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379}


def endpoints() -> dict[str, tuple[str, int]]:
    found = {}
    for name in ("DATABASE_URL", "REDIS_URL"):
        url = urlsplit(os.environ.get(name, ""))
        if url.hostname:
            found[name] = (url.hostname, url.port or DEFAULT_PORTS.get(url.scheme, 0))
    return found


def unreachable(targets: dict[str, tuple[str, int]]) -> dict[str, str]:
    down = {}
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
