"""An account changed by an operator loses its sessions at once (app/auth/epochs.py), and a
logged-in request knows its user without asking Postgres."""

from __future__ import annotations

import pytest
from conftest import AuthActions
from sqlalchemy import event, text

from app.auth import epochs
from app.auth.epochs import EPOCH_KEY
from app.extensions import db, get_redis, make_redis

PASSWORD_ENV = {"NEW_PASSWORD": "a brand new long password"}


def logged_in(client) -> bool:
    return "Log out" in client.get("/").get_data(as_text=True)


def session_key(client) -> str:
    """The Redis key of the client's session (Flask-Session's prefix and the cookie's id)."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    return f"flaskstack:session:{cookie.value}"


def stored_data(app, key: str) -> bytes | None:
    with app.app_context():
        return get_redis().get(key)


def as_written_before_sessions_were_listed(client) -> None:
    """Make the client's session one that a release before the list of sessions wrote."""
    with client.session_transaction() as session:
        session[epochs.SESSION_KEY] = {
            name: value for name, value in session[epochs.SESSION_KEY].items() if name != "listed"
        }


@pytest.mark.parametrize(
    "command",
    [
        ["set-admin", "--revoke", "boss"],
        ["set-password", "boss"],
        ["delete-user", "--yes", "boss"],
        ["end-sessions", "boss"],
    ],
)
def test_an_account_change_ends_its_sessions_at_the_next_request(
    app, client, auth, make_user, runner, command
):
    make_user("boss", admin=True)
    auth.login("boss")
    assert client.get("/admin/deleted").status_code == 200
    # Another browser of the same account loses its session too.
    other = app.test_client()
    AuthActions(other).login("boss")
    assert logged_in(other)

    stored = [session_key(browser) for browser in (client, other)]
    assert all(stored_data(app, key) for key in stored)

    result = runner.invoke(args=command, env=PASSWORD_ENV)
    assert result.exit_code == 0, result.output

    # Deleted from Redis at once, not at their next request.
    assert [stored_data(app, key) for key in stored] == [None, None]
    admin_page = client.get("/admin/deleted")
    assert admin_page.status_code == 302 and "/login" in admin_page.headers["Location"]
    assert not logged_in(client)
    assert not logged_in(other)


def test_a_new_password_revokes_the_api_token(client, make_user, api_token, runner):
    make_user("boss")
    token = api_token("boss")
    post = {"title": "Before", "body": "b"}
    assert client.post("/api/v1/posts", json=post, headers=token).status_code == 201

    result = runner.invoke(args=["set-password", "boss"], env=PASSWORD_ENV)
    assert result.exit_code == 0 and "API token revoked" in result.output, result.output

    refused = client.post("/api/v1/posts", json={**post, "title": "After"}, headers=token)
    assert refused.status_code == 401 and "message" in refused.json, refused.data


@pytest.mark.parametrize("when", ["before the epoch", "after the epoch"])
@pytest.mark.parametrize(
    ("command", "password_still_right"),
    [
        (["set-admin", "--revoke", "boss"], True),
        (["set-password", "boss"], False),
        (["delete-user", "--yes", "boss"], False),
    ],
    ids=["demoted", "new password", "deleted"],
)
def test_a_change_that_lands_during_a_log_in_is_not_missed(
    app, client, auth, make_user, runner, monkeypatch, command, password_still_right, when
):
    """The operator's command commits (and ends sessions) while a log-in is between checking
    the password and storing the session: the session never carries the old account."""
    make_user("boss", admin=True)
    take_epoch = epochs.epoch_of

    def change_around_the_epoch(user_id: int) -> str:
        epoch = take_epoch(user_id) if when == "after the epoch" else None
        with app.app_context():  # the command's own database session, as in another process
            result = runner.invoke(args=command, env=PASSWORD_ENV)
        assert result.exit_code == 0, result.output
        return epoch or take_epoch(user_id)

    monkeypatch.setattr(epochs, "epoch_of", change_around_the_epoch)
    auth.login("boss")
    monkeypatch.undo()

    # Logged in only when the password checked is still the account's and the change came
    # before the epoch (the session then knows it); an admin page refuses either way.
    stays = password_still_right and when == "before the epoch"
    assert logged_in(client) == stays
    assert client.get("/admin/deleted").status_code == (403 if stays else 302)


def test_a_session_written_after_its_account_sessions_ended_is_not_kept(
    app, client, auth, make_user
):
    """A request that was running when the account's sessions ended, and writes its session
    afterwards (a flash message, a form's token), does not bring the session back."""
    make_user("alice")
    auth.login("alice")
    key = session_key(client)
    with app.test_request_context("/", headers={"Cookie": f"session={key.rsplit(':', 1)[1]}"}):
        from flask import request

        interface = app.session_interface
        running = interface.open_session(app, request)
        assert running[epochs.SESSION_KEY]["username"] == "alice"
        epochs.end_sessions(running[epochs.SESSION_KEY]["id"])
        assert stored_data(app, key) is None
        running["note"] = "written at the end of the request"
        interface.save_session(app, running, app.response_class())
    assert stored_data(app, key) is None
    assert not logged_in(client)


def test_a_logged_in_page_asks_redis_for_its_session_only(app, client, auth, make_user):
    make_user("alice")
    auth.login("alice")
    stranger = app.test_client()

    def redis_reads(browser) -> int:
        with app.app_context():
            redis = get_redis()
            redis.config_resetstat()
            assert browser.get("/").status_code == 200
            stats = redis.info("commandstats")
        return sum(
            stats.get(f"cmdstat_{command}", {}).get("calls", 0)
            for command in ("get", "mget", "exists", "smembers", "sismember", "hget")
        )

    assert logged_in(client) and not logged_in(stranger)
    assert redis_reads(client) == redis_reads(stranger) + 1


def test_a_session_from_an_earlier_release_is_checked_against_the_epoch_and_listed(
    app, client, auth, make_user, runner
):
    make_user("alice")
    auth.login("alice")
    as_written_before_sessions_were_listed(client)
    assert logged_in(client)  # the epoch still holds: listed and written again
    with client.session_transaction() as session:
        assert session[epochs.SESSION_KEY]["listed"] is True
    assert runner.invoke(args=["end-sessions", "alice"]).exit_code == 0
    assert not logged_in(client)


def test_redis_failing_at_the_epoch_read_is_a_503_not_a_stranger(
    client, auth, make_user, monkeypatch
):
    make_user("boss", admin=True)
    auth.login("boss")
    as_written_before_sessions_were_listed(client)  # the sessions that still read it
    # The session opens from the live Redis; only the epoch read meets one that is down
    # (nothing listens on port 1).
    monkeypatch.setattr(epochs, "get_redis", lambda: make_redis("redis://127.0.0.1:1/0"))
    for path in ("/", "/admin/deleted", "/posts/new"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "temporarily unavailable" in response.get_data(as_text=True)
    monkeypatch.undo()
    # The session was not thrown away: back to normal once Redis answers.
    assert client.get("/admin/deleted").status_code == 200


def test_a_deleted_users_api_token_stops_working(client, make_user, api_token, runner):
    make_user("alice")
    headers = api_token("alice")
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    assert runner.invoke(args=["delete-user", "--yes", "alice"]).exit_code == 0
    assert client.get("/api/v1/me", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("sql", "command"),
    [
        ("DELETE FROM users WHERE username = 'boss'", ["end-sessions", "--user-id", "1"]),
        ("UPDATE users SET is_admin = false", ["end-sessions", "--all"]),
    ],
)
def test_after_a_change_made_with_sql_end_sessions_logs_the_account_out(
    app, client, auth, make_user, runner, sql, command
):
    make_user("boss", admin=True)
    auth.login("boss")
    with app.app_context():
        db.session.execute(text(sql))
        db.session.commit()
    # SQL by hand goes around the epoch: the session still believes the old account ...
    assert client.get("/admin/deleted").status_code == 200
    result = runner.invoke(args=command)
    assert result.exit_code == 0, result.output
    # ... until the command the README asks for after such a change.
    assert not logged_in(client)


@pytest.mark.parametrize("args", [[], ["boss", "--all"], ["--user-id", "1", "--all"]])
def test_end_sessions_wants_exactly_one_account_or_all(runner, args):
    result = runner.invoke(args=["end-sessions", *args])
    assert result.exit_code == 2
    assert "one of USERNAME, --user-id or --all" in result.output


def test_a_demoted_admin_who_logs_in_again_is_an_ordinary_user(client, auth, make_user, runner):
    make_user("boss", admin=True)
    auth.login("boss")
    assert runner.invoke(args=["set-admin", "--revoke", "boss"]).exit_code == 0
    auth.login("boss")
    assert logged_in(client)
    assert client.get("/admin/deleted").status_code == 403


@pytest.mark.parametrize("written", ["listed", "before the list"])
def test_a_lost_epoch_never_lets_anyone_in(app, client, auth, make_user, written):
    make_user("alice")
    auth.login("alice")
    if written == "before the list":
        as_written_before_sessions_were_listed(client)
    with app.app_context():
        user_id = db.session.scalar(db.text("SELECT id FROM users WHERE username = 'alice'"))
        get_redis().delete(EPOCH_KEY.format(user_id))
        stored = get_redis().get(session_key(client))
        # A listed session is ended by being deleted, so it holds until its next write,
        # which finds the epoch gone; one from before the list ends at its next request.
        assert stored is not None
    if written == "listed":
        assert logged_in(client)
        with client.session_transaction() as session:
            session["note"] = "any write"
    assert not logged_in(client)
    # The ended session is gone for good: a new epoch does not bring it back.
    auth.login("alice")
    assert logged_in(client)


def test_a_session_started_before_epochs_existed_is_logged_out(client, auth, make_user):
    make_user("alice")
    auth.login("alice")
    with client.session_transaction() as session:  # as the log-in of the previous release
        del session[epochs.SESSION_KEY]
        assert "_user_id" in session
    assert not logged_in(client)
    with client.session_transaction() as session:
        assert "_user_id" not in session


def test_a_logged_in_page_asks_postgres_nothing_more_than_an_anonymous_one(
    app, client, auth, make_user
):
    make_user("alice")
    auth.login("alice")
    auth.post_form("/posts/new", {"title": "Hello", "body": "Text."})
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    with app.app_context():
        engines = list(db.engines.values())
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        assert logged_in(client)
        as_member = list(statements)
        statements.clear()
        assert not logged_in(app.test_client())
        as_stranger = list(statements)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
    assert as_member == as_stranger and as_member, (as_member, as_stranger)
