"""Surviving a change of the Postgres primary (a Patroni switchover or failover).

DATABASE_URL names every member of the cluster with `target_session_attrs=read-write`, so each
new connection reaches the member that is the primary now. This module decides what a request
does when the primary changes under it; `FlaskStack.dispatch_request` (app/__init__.py) and the
read-write engine's connections (`CommitCheckingConnection`) carry it out.

**A view runs again** when its database work failed before anything was committed: its
connection died (an old primary ends its sessions), no member accepts writes yet (during a
switchover the members answer "session is read-only" or "the database system is shutting
down"), or a demoted member refused a write (SQLSTATE 25006). Its transaction was rolled back,
so running it again is safe for a POST as for a GET. Between runs the request waits, with
backoff, up to PRIMARY_CHANGE_WAIT_S from its start, then answers 503 as before. It does not
wait when no server answers at all (an outage: the 503 comes at once), nor once it has committed
a write.

**A COMMIT that broke off** (the connection died while it ran) may or may not have happened.
Before a transaction that wrote something commits, its connection asks for the transaction's
id, the WAL position and the server's start time: one round trip per write transaction, none
for reads. After the break it connects to the primary of the moment and asks `pg_xact_status`:
committed, and `commit()` returns as if nothing had happened (the view goes on to its answer);
aborted, and `CommitNotApplied` runs the view again; no answer in time, and
`CommitOutcomeUnknown` is a 503, never a guess. A transaction id means something only on a
server whose history holds the transaction: a promoted standby that never received its records,
or a server that lost unflushed WAL in a crash, may since have given the same number to another
transaction. So the id is asked about only on the server (and run) that assigned it, on one that
started without recovery (nothing lost), or on one whose recovery replayed past the position;
any other never saw the commit record, so there the transaction did not commit.

**A commit the synchronous standby did not confirm is not a success.** When the wait for the
standby is cancelled (pg_cancel_backend, a client's cancel request), Postgres reports success
with the WARNING "canceling wait for synchronous replication": the write is on the primary alone
and lost at a failover. `commit()` turns that warning into `CommitNotReplicated`, a 503.
(statement_timeout does not end that wait: Postgres stops its timer before committing.) A commit
found committed after a break is confirmed the same way: a WAL record committed behind it must
come back without that warning.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from contextlib import closing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.exc import DBAPIError

from app import config
from app.extensions import db

log = logging.getLogger(__name__)

# Failures to connect that say a server answered but none takes writes right now: libpq's words
# for target_session_attrs, the server's own while it starts or stops (57P03), and a connection
# closed while it was being set up (a server on its way down, or a proxy with no primary). In
# English, as libpq and the server write them under the C and en_* locales.
NO_PRIMARY_NOW = (
    "session is read-only",
    "server is in hot standby mode",
    "the database system is",
    "server closed the connection unexpectedly",
    "SSL SYSCALL error: EOF detected",
    "SSL connection has been closed unexpectedly",
    "could not receive data from server",
    "could not send data to server",
)
READ_ONLY_SQL_TRANSACTION = "25006"  # a demoted member refusing a write
# In both of Postgres' warnings that end a commit's wait for the synchronous standby early (the
# server's lc_messages must be English or C for these words).
SYNC_REP_WAIT_ENDED = "synchronous replication"
# Statements that cannot have written anything; any other makes the transaction a write.
READS = re.compile(r"\s*(SELECT|SHOW)\b", re.IGNORECASE)


class CommitNotApplied(psycopg2.OperationalError):
    """COMMIT broke off, and the primary's history shows the transaction did not commit."""


class CommitOutcomeUnknown(psycopg2.OperationalError):
    """COMMIT broke off, and whether it took effect could not be found out in time."""


class CommitNotReplicated(psycopg2.OperationalError):
    """The primary committed, but its synchronous standby did not confirm the commit."""


@dataclass(frozen=True)
class CommitMarker:
    """A write transaction just before its COMMIT: its id, a WAL position after every record it
    wrote, and which server run assigned the id (its start time)."""

    xid: str
    wal_position: str
    server_started: datetime


@dataclass
class _RequestBudget:
    deadline: float
    committed_a_write: bool = False


_budget: ContextVar[_RequestBudget | None] = ContextVar("primary_change_budget", default=None)


@contextmanager
def request_budget():
    """Bound every wait of one request by PRIMARY_CHANGE_WAIT_S from now."""
    token = _budget.set(_RequestBudget(time.monotonic() + config.PRIMARY_CHANGE_WAIT_S))
    try:
        yield
    finally:
        _budget.reset(token)


def _deadline() -> float:
    budget = _budget.get()
    return budget.deadline if budget else time.monotonic() + config.PRIMARY_CHANGE_WAIT_S


def _backoff(attempt: int) -> float:
    ceiling = min(1.0, 0.1 * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret


def rerun_delay(exc: DBAPIError, attempt: int) -> float | None:
    """Seconds to wait before the view runs again after `exc`, or None if it must not (then
    `exc` is the answer). `attempt` counts the runs of this request that failed before."""
    budget = _budget.get()
    if budget is None or budget.committed_a_write:
        return None
    error = exc.orig
    if isinstance(error, CommitNotApplied):
        return 0.0  # a primary answered a moment ago
    if isinstance(error, CommitOutcomeUnknown | CommitNotReplicated):
        return None
    if exc.connection_invalidated:  # a session the server ended, or a demoted member's
        if attempt == 0:
            return 0.0  # the pool was renewed: the next run gets a new connection
    elif not any(words in str(error) for words in NO_PRIMARY_NOW):
        return None  # the request's own error, or no server answers at all
    remaining = budget.deadline - time.monotonic()
    return min(remaining, _backoff(attempt)) if remaining > 0 else None


class CommitCheckingConnection(psycopg2.extensions.connection):
    """The read-write engine's psycopg2 connections: `commit()` neither reports a failure for a
    write that committed nor a success for one that a failover may lose."""

    def __init__(self, dsn: str, *args, **kwargs) -> None:
        super().__init__(dsn, *args, **kwargs)
        self.reconnect_dsn = dsn  # psycopg2's own `dsn` hides the password
        self.wrote = False  # set by the engine's before_cursor_execute hook (`_note_writes`)

    def commit(self) -> None:
        wrote, self.wrote = self.wrote, False
        marker = self._marker() if wrote else None
        del self.notices[:]
        try:
            super().commit()
        except psycopg2.Error as exc:
            # Nothing written, or the server's own refusal (the connection is still open):
            # the outcome is known.
            if marker is None or not self.closed:
                raise
            find_outcome(self.reconnect_dsn, marker, exc)
        else:
            if any(SYNC_REP_WAIT_ENDED in notice for notice in self.notices):
                log.error(
                    "transaction %s committed on the primary but the synchronous standby did "
                    "not confirm it; answering as failed: %s",
                    marker.xid if marker else "-",
                    " ".join(self.notices).strip(),
                )
                raise CommitNotReplicated("the commit was not confirmed by the synchronous standby")
        budget = _budget.get()
        if marker is not None and budget is not None:
            budget.committed_a_write = True

    def rollback(self) -> None:
        self.wrote = False
        # After a broken COMMIT that turned out committed the pool still rolls back on check-in;
        # a closed connection has nothing to roll back, and pre-ping replaces it.
        if self.closed:
            return
        super().rollback()

    def _marker(self) -> CommitMarker | None:
        with self.cursor() as cursor:
            cursor.execute(
                "SELECT pg_current_xact_id_if_assigned(), pg_current_wal_insert_lsn(), "
                "pg_postmaster_start_time()"
            )
            xid, wal_position, server_started = cursor.fetchone()
        return CommitMarker(xid, wal_position, server_started) if xid is not None else None


def find_outcome(dsn: str, marker: CommitMarker, cause: psycopg2.Error) -> None:
    """Return if the transaction of `marker` committed and the synchronous standby confirms it;
    raise CommitNotApplied if it did not commit, CommitOutcomeUnknown if that is not known by
    the request's deadline."""
    log.warning(
        "COMMIT of transaction %s broke off (%s); asking the primary whether it happened",
        marker.xid,
        _one_line(cause),
    )
    deadline = _deadline()
    attempt = 0
    while True:
        try:
            status = reason = _ask_primary(dsn, marker, deadline)
        except psycopg2.Error as exc:  # no primary yet, or it went away meanwhile
            status, reason = "no answer", _one_line(exc)
        if status == "committed":
            log.warning("transaction %s had committed: the request goes on", marker.xid)
            return
        if status == "aborted":
            log.warning("transaction %s did not commit: the view runs again", marker.xid)
            raise CommitNotApplied(f"transaction {marker.xid} did not commit") from cause
        delay = _backoff(attempt)
        if status not in ("in progress", "no answer") or time.monotonic() + delay >= deadline:
            raise CommitOutcomeUnknown(
                f"whether transaction {marker.xid} committed is unknown: {reason}"
            ) from cause
        time.sleep(delay)
        attempt += 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _ask_primary(dsn: str, marker: CommitMarker, deadline: float) -> str | None:
    with closing(psycopg2.connect(dsn)) as primary:
        status = _status_on(primary, marker)
        if status == "committed" and not _confirmed_by_standby(primary, deadline):
            return "committed on the primary, not confirmed by the synchronous standby"
        return status


def _status_on(probe, marker: CommitMarker) -> str | None:
    """pg_xact_status of the marker's transaction where its id means that transaction; where it
    cannot (see the module's docstring), "aborted": the commit record never reached there."""
    with probe.cursor() as cursor:
        cursor.execute(
            "SELECT pg_postmaster_start_time() = %s"
            " OR coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, true)",
            (marker.server_started, marker.wal_position),
        )
        if not cursor.fetchone()[0]:
            return "aborted"
        cursor.execute("SELECT pg_xact_status(%s::xid8)", (marker.xid,))
        return cursor.fetchone()[0]


def _confirmed_by_standby(probe, deadline: float) -> bool:
    """Commit a WAL record on the primary: its COMMIT returns once the synchronous standby has
    the WAL up to it, and so the transaction asked about too. Cancelled at the deadline."""
    with probe.cursor() as cursor:
        cursor.execute("SELECT pg_logical_emit_message(true, 'flaskstack', 'commit check')")
    del probe.notices[:]
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), probe.cancel)
    timer.start()
    try:
        probe.commit()
    finally:
        timer.cancel()
    return not any(SYNC_REP_WAIT_ENDED in notice for notice in probe.notices)


def _use_commit_checking_connections(dialect, connection_record, cargs, cparams) -> None:
    cparams["connection_factory"] = CommitCheckingConnection


def _note_writes(connection, cursor, statement, parameters, context, executemany) -> None:
    if not READS.match(statement):
        cursor.connection.wrote = True


def _demoted_member_is_a_disconnect(context: sa.engine.ExceptionContext) -> None:
    """A member demoted under a live session refuses every write: its pooled connections are
    as useless as a lost server's, so the pool is renewed."""
    if getattr(context.original_exception, "pgcode", None) == READ_ONLY_SQL_TRANSACTION:
        context.is_disconnect = True


def init_app(app: Flask) -> None:
    """Hook the read-write engine (POST and the other unsafe methods, CLI, worker)."""
    with app.app_context():
        engine = db.engines[None]
    sa.event.listen(engine, "do_connect", _use_commit_checking_connections)
    sa.event.listen(engine, "before_cursor_execute", _note_writes)
    sa.event.listen(engine, "handle_error", _demoted_member_is_a_disconnect)
