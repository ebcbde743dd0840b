"""Requests to an app in the test process while its Postgres primary changes, and the faults
that tests/integration/test_db_failover.py causes in the middle of a COMMIT."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    """One request: what it did, its HTTP status (0: it raised), and what it wrote."""

    what: str
    status: int
    written: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400


class RequestLoop:
    """One thread per action, each running its action over and over until the loop ends; the
    action gets its run's number and returns the request's Outcome."""

    def __init__(self, *actions: Callable[[int], Outcome]) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(action,), daemon=True) for action in actions
        ]

    def _run(self, action: Callable[[int], Outcome]) -> None:
        run = 0
        while not self._stop.is_set():
            try:
                outcome = action(run)
            except Exception as exc:  # noqa: BLE001 - counted as a failed request
                outcome = Outcome(f"{type(exc).__name__}: {exc}", 0)
            with self._lock:
                self.outcomes.append(outcome)
            run += 1

    def wait_for(self, more: int, timeout: float = 30.0) -> None:
        """Until `more` requests beyond those counted now have ended."""
        target = len(self.outcomes) + more
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < target:
            assert time.monotonic() < deadline, f"only {len(self.outcomes)} of {target} requests"
            time.sleep(0.02)

    def __enter__(self) -> RequestLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    def written(self) -> list[str]:
        """What the acknowledged writes wrote."""
        return [outcome.written for outcome in self.outcomes if outcome.ok and outcome.written]


@dataclass
class BackendFault:
    """What `fault_in_commit` did: the session it hit, and that session's transaction id."""

    pid: int | None = None
    xid: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@contextmanager
def fault_in_commit(
    server,
    wait_event: str,
    action: str | None,
    then: Callable[[BackendFault], None] | None = None,
) -> Iterator[BackendFault]:
    """Once a session of the app (application_name flaskstack) waits on `wait_event` while it
    runs COMMIT, call `action` (pg_terminate_backend, pg_cancel_backend, or nothing) on it, then
    `then`: once, from a thread watching pg_stat_activity."""
    fault = BackendFault()
    stop = threading.Event()

    def watch() -> None:
        admin = server.admin()
        try:
            with admin.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute(
                        "SELECT pid, backend_xid::text FROM pg_stat_activity"
                        " WHERE application_name = 'flaskstack' AND query = 'COMMIT'"
                        " AND wait_event = %s",
                        (wait_event,),
                    )
                    found = cursor.fetchone()
                    if found:
                        fault.pid, fault.xid = found
                        if action is not None:
                            cursor.execute(f"SELECT {action}(%s)", (fault.pid,))
                        if then is not None:
                            then(fault)
                        fault.done.set()
                        return
                    time.sleep(0.01)
        finally:
            admin.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield fault
    finally:
        stop.set()
        watcher.join(timeout=10)
