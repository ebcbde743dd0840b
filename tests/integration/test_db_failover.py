"""The app while its Postgres primary changes (app/primary_change.py), on real servers: a primary
and a streaming standby on loopback, the app's DATABASE_URL naming both in libpq's multi-host
form with target_session_attrs=read-write, as the Ansible roles write it for a Patroni cluster.

No request may fail and no acknowledged write may be lost; a commit whose answer was lost must
be neither made twice nor reported for one that did not happen; a commit the synchronous
standby did not confirm must not be acknowledged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import AuthActions
from flask_migrate import upgrade
from sqlalchemy import select, text

from app import config, create_app
from app.extensions import csrf, db, get_redis
from app.models import Post, User
from support.primary_change import Outcome, RequestLoop, fault_in_commit
from tools.servers import POSTGRES_DB, POSTGRES_USER, PostgresPrimary, PostgresStandby

ROOT = Path(__file__).resolve().parents[2]

# A commit waits for a synchronous standby that does not exist.
NO_SUCH_STANDBY = "nobody_by_this_name"
# Makes every COMMIT that inserted a post take a while, long enough to be interrupted.
SLOW_COMMITS = """
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON posts
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
"""


def database_url(*servers) -> str:
    """libpq's query form, as roles/app writes it (the form SQLAlchemy reads as it is)."""
    hosts = ",".join("127.0.0.1" for _ in servers)
    ports = ",".join(str(server.port) for server in servers)
    return (
        f"postgresql://{POSTGRES_USER}:{servers[0].password}@/{POSTGRES_DB}"
        f"?host={hosts}&port={ports}&target_session_attrs=read-write"
    )


def query(server, sql: str, *params):
    with closing(server.admin(POSTGRES_DB)) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def titles(server) -> list[str]:
    return sorted(title for (title,) in query(server, "SELECT title FROM posts"))


def started_primary(base_env) -> PostgresPrimary:
    server = PostgresPrimary()
    server.start()
    server.create_database()
    app = create_app({**base_env, "DATABASE_URL": server.url})
    with app.app_context():
        upgrade()
        for engine in db.engines.values():
            engine.dispose()
    return server


@pytest.fixture
def primary(base_env):
    server = started_primary(base_env)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def standby(primary):
    server = PostgresStandby(primary)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def lone_primary_server(base_env):
    """A primary without a standby, for the faults in a COMMIT, shared by those tests."""
    server = started_primary(base_env)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def lone_primary(lone_primary_server):
    yield lone_primary_server
    lone_primary_server.configure(synchronous_standby_names=None)
    query(lone_primary_server, "TRUNCATE comments, posts, users RESTART IDENTITY CASCADE")


@pytest.fixture
def app_on(base_env):
    """Build the app on the given servers, with an author (alice) and her API token."""
    apps = []

    def build(*servers):
        app = create_app({**base_env, "DATABASE_URL": database_url(*servers)})
        with app.app_context():
            get_redis().flushdb()
            alice = User(username="alice", email="alice@example.org")
            alice.set_password("correct horse battery staple")
            db.session.add(alice)
            app.config["ALICE"] = {"Authorization": f"Bearer {alice.issue_api_token()}"}
            db.session.commit()
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


def api_writer(app, name: str):
    client = app.test_client()

    def write(run: int) -> Outcome:
        title = f"{name} {run}"
        response = client.post(
            "/api/v1/posts", json={"title": title, "body": "Text."}, headers=app.config["ALICE"]
        )
        return Outcome(
            "API post", response.status_code, title if response.status_code == 201 else ""
        )

    return write


def wait_for_services(app_url: str, redis_url: str, timeout: str):
    """deploy/wait-for-services.py, as the image's entrypoint runs it."""
    env = {**os.environ, "DATABASE_URL": app_url, "REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "deploy/wait-for-services.py", timeout],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_no_request_fails_and_no_write_is_lost_through_a_switchover(
    primary, standby, app_on, redis_server, caplog
):
    app = app_on(primary, standby)
    # As Patroni's synchronous_mode: a commit is acknowledged once the standby has it too.
    primary.configure(synchronous_standby_names="*")
    browser = AuthActions(app.test_client())
    assert browser.login().status_code == 302
    first = browser.client.post(
        "/api/v1/posts", json={"title": "first", "body": "Text."}, headers=app.config["ALICE"]
    )
    assert first.status_code == 201

    def comment_by_form(run: int) -> Outcome:
        body = f"comment {run}"
        path = f"/posts/{first.json['id']}"
        response = browser.post_form(f"{path}/comments", {"body": body}, form_page=path)
        return Outcome("comment form", response.status_code, body)

    def read(run: int) -> Outcome:
        return Outcome("API read", app.test_client().get("/api/v1/posts?limit=5").status_code)

    caplog.set_level("INFO")
    loop = RequestLoop(api_writer(app, "writer 1"), api_writer(app, "writer 2"), comment_by_form,
                       read)  # fmt: skip
    with loop:
        loop.wait_for(30)
        primary.stop()  # a switchover's first step: a fast shutdown ends every session
        # No member takes writes now; the start-up wait of the image says so and waits.
        waiting = wait_for_services(database_url(primary, standby), redis_server.url, "1")
        standby.promote()
        loop.wait_for(30)
    assert waiting.returncode == 1 and "session is read-only" in waiting.stderr, waiting.stderr
    assert wait_for_services(database_url(primary, standby), redis_server.url, "5").returncode == 0

    assert loop.failed() == []
    assert "running the view again" in caplog.text  # requests did meet the switchover
    written = loop.written()
    assert titles(standby) == sorted(["first", *(w for w in written if w.startswith("writer"))])
    bodies = sorted(body for (body,) in query(standby, "SELECT body FROM comments"))
    assert bodies == sorted(w for w in written if w.startswith("comment"))


def test_a_commit_that_broke_off_after_it_took_effect_is_not_made_twice(
    lone_primary, app_on, caplog
):
    app = app_on(lone_primary)
    lone_primary.configure(synchronous_standby_names=NO_SUCH_STANDBY)

    def standby_is_back(fault) -> None:
        lone_primary.configure(synchronous_standby_names=None)

    # The session is ended while its COMMIT waits for the standby: committed, and not answered.
    with fault_in_commit(lone_primary, "SyncRep", "pg_terminate_backend", standby_is_back) as fault:
        response = app.test_client().post(
            "/api/v1/posts", json={"title": "once", "body": "Text."}, headers=app.config["ALICE"]
        )
    assert fault.done.is_set()
    assert response.status_code == 201, response.json
    assert response.json["title"] == "once"
    assert titles(lone_primary) == ["once"]
    assert f"transaction {fault.xid} had committed" in caplog.text


def test_a_commit_that_broke_off_before_it_took_effect_is_made_again(lone_primary, app_on, caplog):
    app = app_on(lone_primary)
    query(lone_primary, SLOW_COMMITS)
    try:
        with fault_in_commit(lone_primary, "PgSleep", "pg_terminate_backend") as fault:
            response = app.test_client().post(
                "/api/v1/posts",
                json={"title": "once", "body": "Text."},
                headers=app.config["ALICE"],
            )
    finally:
        query(lone_primary, "DROP TRIGGER slow_commit ON posts; DROP FUNCTION slow_commit()")
    assert fault.done.is_set()
    assert response.status_code == 201, response.json
    assert titles(lone_primary) == ["once"]
    assert f"transaction {fault.xid} did not commit" in caplog.text


def test_a_commit_the_synchronous_standby_did_not_confirm_is_not_acknowledged(
    lone_primary, app_on, caplog
):
    """Cancelling a commit's wait for the standby makes Postgres answer success with a warning;
    the write is on the primary alone, and a failover would lose it."""
    app = app_on(lone_primary)
    lone_primary.configure(synchronous_standby_names=NO_SUCH_STANDBY)
    browser = AuthActions(app.test_client())
    assert browser.login().status_code == 302

    with fault_in_commit(lone_primary, "SyncRep", "pg_cancel_backend") as fault:
        response = browser.client.post(
            "/api/v1/posts", json={"title": "t", "body": "b"}, headers=app.config["ALICE"]
        )
    assert fault.done.is_set()
    assert response.status_code == 503
    assert "temporarily unavailable" in response.json["message"]

    with fault_in_commit(lone_primary, "SyncRep", "pg_cancel_backend") as fault:
        response = browser.post_form("/posts/new", {"title": "t", "body": "b"})
    assert fault.done.is_set()
    assert response.status_code == 503
    assert "temporarily unavailable" in response.get_data(as_text=True)
    assert caplog.text.count("the synchronous standby did not confirm it") == 2


def test_a_broken_off_commit_the_standby_never_confirms_is_not_acknowledged(
    lone_primary, app_on, caplog, monkeypatch
):
    """Committed on the primary, answer lost, and the standby never confirms it: a 503 once the
    request's wait is over, not a success."""
    monkeypatch.setattr(config, "PRIMARY_CHANGE_WAIT_S", 1.0)
    app = app_on(lone_primary)
    lone_primary.configure(synchronous_standby_names=NO_SUCH_STANDBY)
    started = time.monotonic()
    with fault_in_commit(lone_primary, "SyncRep", "pg_terminate_backend") as fault:
        response = app.test_client().post(
            "/api/v1/posts", json={"title": "t", "body": "b"}, headers=app.config["ALICE"]
        )
    assert fault.done.is_set()
    assert response.status_code == 503
    assert time.monotonic() - started < 5
    assert "not confirmed by the synchronous standby" in caplog.text


def test_a_transaction_id_counts_only_where_the_history_holds_the_transaction(
    primary, standby, app_on, caplog
):
    """The primary crashes while a COMMIT waits for a standby that never got its WAL; the
    standby is promoted and hands out the same transaction id, to a transaction of its own that
    commits. That commit is not the app's: the view runs again instead of answering for a
    write that is gone."""
    app = app_on(primary, standby)
    primary.configure(synchronous_standby_names="*")
    standby.stop()  # from here on, commits wait for it and it receives nothing

    def fail_over(fault) -> None:
        primary.crash()
        standby.start()
        standby.promote()
        with closing(standby.admin(POSTGRES_DB)) as connection, connection.cursor() as cursor:
            while True:  # each statement is a transaction: new ids until the app's is reused
                cursor.execute("SELECT pg_current_xact_id()::text")
                if int(cursor.fetchone()[0]) >= int(fault.xid):
                    break

    with fault_in_commit(primary, "SyncRep", None, fail_over) as fault:
        response = app.test_client().post(
            "/api/v1/posts", json={"title": "lost", "body": "b"}, headers=app.config["ALICE"]
        )
    assert fault.done.is_set()
    assert query(standby, "SELECT pg_xact_status(%s::xid8)", fault.xid) == [("committed",)]
    assert response.status_code == 201, response.json
    assert titles(standby) == ["lost"]
    assert f"transaction {fault.xid} did not commit" in caplog.text


def test_a_view_does_not_run_again_once_it_has_committed_a_write(app, client, make_user):
    """Its connection is lost after the commit: the write is done, and another run would make it
    twice; the answer is the 503 of a lost connection."""
    make_user("alice")

    def write_then_lose_the_connection():
        db.session.add(Post(author=db.session.scalar(select(User)), title="once", body="b"))
        db.session.commit()
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        db.session.execute(text("SELECT 1"))
        return "answered"

    app.add_url_rule("/write-then-lose", view_func=write_then_lose_the_connection, methods=["POST"])
    csrf.exempt(write_then_lose_the_connection)
    assert client.post("/write-then-lose").status_code == 503
    with app.app_context():
        assert db.session.scalars(select(Post.title)).all() == ["once"]
