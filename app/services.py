"""Waiting for Postgres and Redis at start-up, with bounded exponential backoff and jitter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from app.health import check_services

log = logging.getLogger(__name__)


def wait_for_services(
    timeout: float = 60.0,
    base_delay: float = 0.5,
    max_delay: float = 8.0,
    check: Callable[[], dict[str, str]] = check_services,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Poll `check` (needs an app context) until every service is "ok" or `timeout` passes.

    Delays grow 0.5, 1, 2, 4, 8, 8 … seconds, half of each one random ("equal jitter"), so
    a fleet of restarting workers does not hammer a recovering database in lockstep.
    """
    deadline = clock() + timeout
    attempt = 0
    while True:
        results = check()
        down = {name: reason for name, reason in results.items() if reason != "ok"}
        if not down:
            if attempt:
                log.info("services are up after %d retries", attempt)
            return True
        remaining = deadline - clock()
        if remaining <= 0:
            log.error("gave up waiting for services: %s", down)
            return False
        delay = min(max_delay, base_delay * 2**attempt)
        jitter = random.uniform(0, delay / 2)  # noqa: S311 - jitter, not secrets
        delay = min(remaining, delay / 2 + jitter)
        log.warning("waiting %.1fs for services: %s", delay, down)
        sleep(delay)
        attempt += 1
