"""With Redis or Postgres down: fast 503s (page or JSON), and recovery without a restart."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

FAST = 5.0  # seconds: "fast" means well inside any proxy or client timeout


@contextmanager
def stopped(server):
    server.stop()
    try:
        yield
    finally:
        server.start()


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.fixture
def signed_in(client, auth, make_user, api_token):
    make_user("alice")
    auth.login("alice")
    auth.post_form("/posts/new", {"title": "Still here", "body": "Text."})
    return api_token("alice")


def test_redis_down_gives_fast_503s_and_recovers(client, signed_in, redis_server):
    with stopped(redis_server):
        response, took = timed(lambda: client.get("/"))
        assert response.status_code == 503
        assert took < FAST
        page = response.get_data(as_text=True)
        assert "temporarily unavailable" in page
        assert response.headers["Retry-After"] == "5"

        response, took = timed(lambda: client.get("/readyz"))
        assert response.status_code == 503
        assert response.json["redis"] != "ok"
        assert response.json["postgres"] == "ok"

        # Rate-limited endpoints need their Redis counters.
        response, took = timed(
            lambda: client.post("/api/v1/tokens", json={"username": "alice", "password": "x"})
        )
        assert response.status_code == 503
        assert response.json == {"message": response.json["message"]}
        assert took < FAST

        # Token-authenticated writes still land in Postgres; only the e-mail job is lost.
        response = client.post(
            "/api/v1/posts/1/comments", json={"body": "during the outage"}, headers=signed_in
        )
        assert response.status_code == 201
        assert client.get("/healthz").status_code == 200

    assert client.get("/readyz").status_code == 200
    # The test Redis keeps no data across restarts, so the session is gone: a fresh visitor.
    response = client.get("/")
    assert response.status_code == 200
    assert "Still here" in response.get_data(as_text=True)
    assert client.get("/api/v1/comments/1").json["body"] == "during the outage"


@contextmanager
def redis_full(redis_server):
    """The test Redis refusing every write (maxmemory reached under noeviction)."""
    import redis

    admin = redis.Redis.from_url(redis_server.url)
    before = admin.config_get("maxmemory")["maxmemory"], admin.config_get("maxmemory-policy")
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        yield
    finally:
        admin.config_set("maxmemory", before[0])
        admin.config_set("maxmemory-policy", before[1]["maxmemory-policy"])
        admin.close()


def test_a_full_redis_gives_503s_not_500s_and_loses_nothing(client, auth, make_user, redis_server):
    from conftest import STRONG_PASSWORD, csrf_token_from

    make_user("alice")
    token = csrf_token_from(client, "/login")  # the form's session, stored before Redis fills
    with redis_full(redis_server):
        # A form page stores a new session; logging in stores the session and the epoch; the
        # API's token endpoint counts attempts in Redis.
        for response in (
            client.get("/register"),
            client.post(
                "/login",
                data={"csrf_token": token, "username": "alice", "password": STRONG_PASSWORD},
            ),
            client.post("/api/v1/tokens", json={"username": "alice", "password": "x"}),
        ):
            assert response.status_code == 503, response.request.path
            assert "temporarily unavailable" in response.get_data(as_text=True)
    assert auth.login("alice").status_code == 302
    assert "alice" in client.get("/").get_data(as_text=True)


def test_postgres_down_gives_fast_503s_and_recovers(client, signed_in, postgres):
    assert client.get("/").status_code == 200  # the pool now holds live connections
    with stopped(postgres):
        for path in ("/", "/posts/1", "/u/alice"):
            response, took = timed(lambda path=path: client.get(path))
            assert response.status_code == 503, path
            assert took < FAST
            assert "temporarily unavailable" in response.get_data(as_text=True)

        response, took = timed(lambda: client.get("/api/v1/posts"))
        assert response.status_code == 503
        assert response.is_json
        assert "temporarily unavailable" in response.json["message"]
        assert took < FAST

        response = client.post("/api/v1/posts", json={"title": "t", "body": "b"}, headers=signed_in)
        assert response.status_code == 503

        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json["postgres"] != "ok"
        assert response.json["redis"] == "ok"

    # The dead pooled connections are replaced (reads: the checkout sees the closed socket;
    # writes: pre-ping): no restart of the app needed.
    assert client.get("/readyz").status_code == 200
    page = client.get("/")
    assert page.status_code == 200
    assert "alice" in page.get_data(as_text=True)  # still logged in: the session is in Redis


def test_a_database_without_the_apps_tables_gives_503s_not_500s(app, client, signed_in):
    """A replaced db host before its restore: the database exists, the tables do not yet."""
    from app.extensions import db

    def rename(old: str, new: str) -> None:
        with app.app_context(), db.engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")

    rename("posts", "posts_elsewhere")
    try:
        page = client.get("/")
        assert page.status_code == 503
        assert "temporarily unavailable" in page.get_data(as_text=True)
        api = client.get("/api/v1/posts")
        assert api.status_code == 503 and "temporarily unavailable" in api.json["message"]
        assert api.headers["Retry-After"] == "5"
    finally:
        rename("posts_elsewhere", "posts")
    assert client.get("/").status_code == 200


def test_wait_for_services_waits_for_a_late_database(app, postgres):
    import threading

    from app.services import wait_for_services

    postgres.stop()
    restart = threading.Timer(1.5, postgres.start)
    restart.start()
    try:
        with app.app_context():
            started = time.monotonic()
            assert wait_for_services(timeout=30, base_delay=0.2)
            assert time.monotonic() - started >= 1.0
    finally:
        restart.join()


def test_wait_for_services_gives_up_after_its_timeout(app, redis_server):
    from app.services import wait_for_services

    with stopped(redis_server), app.app_context():
        started = time.monotonic()
        assert not wait_for_services(timeout=1.5, base_delay=0.2)
        assert time.monotonic() - started < 1.5 + FAST


def test_a_connection_lost_after_the_view_does_not_turn_its_answer_into_a_500(app, client):
    """Postgres restarts between a view's last query and the end of the request: the
    session's closing rollback fails, and the response must still be the view's."""
    from sqlalchemy import text

    from app.extensions import csrf, db

    def view_then_connection_lost():
        # A POST: its session runs in a transaction, which the teardown must roll back.
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return "answered"

    app.add_url_rule("/lost-connection", view_func=view_then_connection_lost, methods=["POST"])
    csrf.exempt(view_then_connection_lost)
    response = client.post("/lost-connection")
    assert response.status_code == 200 and response.get_data(as_text=True) == "answered"
    # The dead connection was thrown away: the next request gets a working one.
    assert client.get("/readyz").status_code == 200
