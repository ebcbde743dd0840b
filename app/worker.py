"""The background worker: `python -m app.worker [--burst]`.

Builds the app once with `create_app`, waits for Postgres and Redis, then runs an RQ worker
on the app's queue inside that app context, so jobs use the same configuration as requests.
`python -m app.worker --check` exits 0 when a worker of this host (or container) is registered
with a live heartbeat (flaskstack.toml: worker_check).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from rq import Worker

from app import create_app
from app.extensions import get_redis
from app.services import wait_for_services
from app.tasks import get_queue

log = logging.getLogger("app.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.worker", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for services")
    parser.add_argument("--check", action="store_true", help="is this host's worker alive?")
    args = parser.parse_args(argv)

    app = create_app()
    with app.app_context():
        if args.check:
            # RQ drops a worker whose heartbeat stopped (Worker.all lists live ones only).
            live = Worker.all(connection=get_redis())
            return 0 if any(w.hostname == socket.gethostname() for w in live) else 1
        if not wait_for_services(timeout=args.wait):
            log.error("Postgres or Redis is unavailable; exiting")
            return 1
        connection = get_redis()
        worker = Worker([get_queue(connection)], connection=connection)
        worker.work(burst=args.burst, logging_level=app.config["LOG_LEVEL"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
