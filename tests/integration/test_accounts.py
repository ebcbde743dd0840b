"""An account changed by an operator loses its sessions at once (app/auth/epochs.py), and a
logged-in request knows its user without asking Postgres."""

from __future__ import annotations

import pytest
from conftest import AuthActions
from sqlalchemy import event

from app.auth.epochs import EPOCH_KEY
from app.extensions import db, get_redis

PASSWORD_ENV = {"NEW_PASSWORD": "a brand new long password"}


def logged_in(client) -> bool:
    return "Log out" in client.get("/").get_data(as_text=True)


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

    result = runner.invoke(args=command, env=PASSWORD_ENV)
    assert result.exit_code == 0, result.output

    admin_page = client.get("/admin/deleted")
    assert admin_page.status_code == 302 and "/login" in admin_page.headers["Location"]
    assert not logged_in(client)
    assert not logged_in(other)


def test_a_demoted_admin_who_logs_in_again_is_an_ordinary_user(client, auth, make_user, runner):
    make_user("boss", admin=True)
    auth.login("boss")
    assert runner.invoke(args=["set-admin", "--revoke", "boss"]).exit_code == 0
    auth.login("boss")
    assert logged_in(client)
    assert client.get("/admin/deleted").status_code == 403


def test_a_lost_epoch_logs_out_and_never_in(app, client, auth, make_user):
    make_user("alice")
    auth.login("alice")
    assert logged_in(client)
    with app.app_context():
        user_id = db.session.scalar(db.text("SELECT id FROM users WHERE username = 'alice'"))
        get_redis().delete(EPOCH_KEY.format(user_id))
    assert not logged_in(client)
    # The ended session is gone for good: a new epoch does not bring it back.
    auth.login("alice")
    assert logged_in(client)


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
