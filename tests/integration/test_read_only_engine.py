"""GET and HEAD read through the read-only engine: autocommit (no BEGIN/ROLLBACK round trips),
read-only in Postgres, and no pre-ping; a dead pooled connection still never fails a read."""

from __future__ import annotations

import logging

import psycopg2.extensions
import pytest
from sqlalchemy import event, text

from app import extensions
from app.config import READ_ONLY_BIND
from app.extensions import db
from app.models import User

IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
IN_TRANSACTION = psycopg2.extensions.TRANSACTION_STATUS_INTRANS


@pytest.fixture
def probed(app):
    """A view that reports what its database connection is, for GET and POST alike."""

    def probe():
        connection = db.session.connection()
        read_only = connection.exec_driver_sql("SHOW transaction_read_only").scalar()
        dbapi_connection = connection.connection.dbapi_connection
        return {
            "engine": "read_only" if connection.engine is db.engines[READ_ONLY_BIND] else "default",
            "read_only": read_only,
            "in_transaction": dbapi_connection.get_transaction_status() == IN_TRANSACTION,
        }

    app.add_url_rule("/__probe", "probe", probe, methods=["GET", "POST"])
    app.config["WTF_CSRF_ENABLED"] = False
    return app


@pytest.fixture
def statements(app):
    """Every statement the app sends during a test: (engine, transaction status after it)."""
    seen: list[tuple[str, int]] = []
    engines = {id(db_engine): name for name, db_engine in db_engines(app).items()}

    def after(conn, cursor, statement, parameters, context, executemany):
        status = conn.connection.dbapi_connection.get_transaction_status()
        seen.append((engines[id(conn.engine)], status, statement))

    for engine in db_engines(app).values():
        event.listen(engine, "after_cursor_execute", after)
    yield seen
    for engine in db_engines(app).values():
        event.remove(engine, "after_cursor_execute", after)


def db_engines(app) -> dict[str, object]:
    with app.app_context():
        return {"default": db.engines[None], "read_only": db.engines[READ_ONLY_BIND]}


def test_get_reads_in_autocommit_on_the_read_only_engine(probed):
    client = probed.test_client()
    answer = client.get("/__probe").json
    assert answer == {"engine": "read_only", "read_only": "on", "in_transaction": False}
    answer = client.post("/__probe").json
    assert answer == {"engine": "default", "read_only": "off", "in_transaction": True}


def test_pages_open_no_transaction(client, auth, make_user, statements):
    make_user("alice")
    auth.login("alice")
    auth.post_form("/posts/new", {"title": "Hello", "body": "Text."})
    statements.clear()
    for path in ("/", "/posts/1", "/u/alice", "/api/v1/posts", "/readyz"):
        assert client.get(path).status_code == 200, path
    assert statements, "the pages ran no SQL at all?"
    for engine, status, statement in statements:
        assert engine == "read_only", statement
        assert status == IDLE, f"a transaction is open after {statement!r}"


def test_a_write_during_a_get_is_refused_by_postgres(probed, caplog):
    def sneaky_write():
        db.session.add(User(username="sneaky", email="sneaky@example.org", password_hash="x"))
        db.session.commit()
        return "written"

    probed.add_url_rule("/__write", "write", sneaky_write)
    caplog.set_level(logging.ERROR)
    assert probed.test_client().get("/__write").status_code == 500
    assert "read-only transaction" in caplog.text
    with probed.app_context():
        assert db.session.scalar(text("SELECT count(*) FROM users")) == 0


def test_no_round_trip_checks_the_read_only_pool(app):
    with app.app_context():
        assert db.engines[READ_ONLY_BIND].pool._pre_ping is False
        assert db.engines[None].pool._pre_ping is True  # writes keep pre-ping


@pytest.fixture
def alice(client, auth, make_user):
    make_user("alice")
    auth.login("alice")
    auth.post_form("/posts/new", {"title": "Still here", "body": "Text."})


def test_pooled_connections_dead_after_a_postgres_restart_fail_no_read(
    client, alice, postgres, caplog
):
    """Postgres says goodbye to its clients when it stops: the checkout sees it, no retry."""
    assert client.get("/").status_code == 200  # the pool now holds a live connection
    postgres.stop()
    postgres.start()
    caplog.set_level(logging.INFO)
    for path in ("/", "/posts/1", "/api/v1/posts"):
        response = client.get(path)
        assert response.status_code == 200, path
    assert "closed by the server" in caplog.text
    assert "running the view again" not in caplog.text


def test_a_dead_connection_the_checkout_cannot_see_is_retried_once(
    client, alice, postgres, caplog, monkeypatch, api_token
):
    """A server that vanished without a word (host crash, network): the first statement
    fails, which invalidates the pool, and the read is retried once on a new connection."""
    headers = api_token("alice")
    assert client.get("/").status_code == 200
    monkeypatch.setattr(extensions, "connection_is_quiet", lambda dbapi_connection: True)
    postgres.stop()
    postgres.start()
    caplog.set_level(logging.INFO)
    response = client.get("/")
    assert response.status_code == 200
    assert "Still here" in response.get_data(as_text=True)
    assert "alice" in response.get_data(as_text=True)  # logged in: the user loaded on retry
    assert caplog.text.count("running the view again") == 1
    assert client.get("/api/v1/posts").status_code == 200
    assert caplog.text.count("running the view again") == 1  # the pool was renewed by the first
    # The write needs no second run: the read-write engine's pre-ping replaces its dead connection.
    response = client.post("/api/v1/posts", json={"title": "t", "body": "b"}, headers=headers)
    assert response.status_code == 201


def test_a_false_alarm_at_checkout_costs_a_reconnect_not_a_request(
    client, alice, monkeypatch, caplog
):
    """Should something unexpected wait on an idle connection's socket, the pool reconnects;
    a connection made for the checkout is not looked at, so this can never loop."""
    assert client.get("/").status_code == 200
    monkeypatch.setattr(extensions, "connection_is_quiet", lambda dbapi_connection: False)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert client.get("/").status_code == 200
    assert caplog.text.count("closed by the server") == 3
