"""When a view runs again after a database failure, and how long its request waits
(app/primary_change.py); tests/integration/test_db_failover.py runs it against real servers."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy.exc import OperationalError

from app import config, primary_change
from app.primary_change import (
    CommitNotApplied,
    CommitNotReplicated,
    CommitOutcomeUnknown,
    rerun_delay,
)

# libpq's words when no member of a cluster takes writes (a switchover's moment)…
NO_PRIMARY = (
    'connection to server at "10.0.0.21", port 5432 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?\n"
    'connection to server at "10.0.0.22", port 5432 failed: session is read-only\n'
)
# …and when none answers at all (an outage).
NO_SERVER = (
    'connection to server at "10.0.0.21", port 5432 failed: Connection refused\n'
    'connection to server at "10.0.0.22", port 5432 failed: Connection refused\n'
)


def failure(error: psycopg2.Error, invalidated: bool = False) -> OperationalError:
    return OperationalError("SELECT 1", None, error, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "message",
    [
        NO_PRIMARY,
        'connection to server at "10.0.0.21", port 5432 failed: FATAL:  the database system is '
        "shutting down",
        'connection to server at "10.0.0.21", port 5432 failed: server closed the connection '
        "unexpectedly",
    ],
)
def test_while_no_server_takes_writes_the_view_runs_again_with_backoff(message):
    with primary_change.request_budget():
        delays = [rerun_delay(failure(psycopg2.OperationalError(message)), n) for n in range(8)]
    assert all(delay is not None and 0 < delay <= 1.0 for delay in delays)
    assert delays[0] <= 0.1 and delays[-1] >= 0.5  # growing, half of each random


def test_an_outage_is_answered_at_once():
    with primary_change.request_budget():
        assert rerun_delay(failure(psycopg2.OperationalError(NO_SERVER)), 0) is None


def test_a_dead_pooled_connection_is_replaced_at_once():
    dead = failure(psycopg2.OperationalError("server closed the connection"), invalidated=True)
    with primary_change.request_budget():
        assert rerun_delay(dead, 0) == 0
        assert 0 < rerun_delay(dead, 1) <= 0.2  # dead again: the old primary is on its way out


@pytest.mark.parametrize(
    ("error", "delay"),
    [
        (CommitNotApplied("transaction 7 did not commit"), 0),  # a primary answered just now
        (CommitOutcomeUnknown("whether transaction 7 committed is unknown"), None),
        (CommitNotReplicated("the commit was not confirmed by the synchronous standby"), None),
    ],
)
def test_a_broken_off_commit_runs_again_only_when_it_did_not_happen(error, delay):
    with primary_change.request_budget():
        assert rerun_delay(failure(error, invalidated=True), 0) == delay


def test_an_error_of_the_request_itself_is_its_answer():
    timeout = psycopg2.errors.QueryCanceled("canceling statement due to statement timeout")
    with primary_change.request_budget():
        assert rerun_delay(failure(timeout), 0) is None


def test_the_wait_ends_with_the_requests_budget(monkeypatch):
    monkeypatch.setattr(config, "PRIMARY_CHANGE_WAIT_S", 0.0)
    with primary_change.request_budget():
        assert rerun_delay(failure(psycopg2.OperationalError(NO_PRIMARY)), 0) is None


def test_nothing_runs_again_outside_a_request():
    assert rerun_delay(failure(psycopg2.OperationalError(NO_PRIMARY)), 0) is None
