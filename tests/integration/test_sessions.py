"""Server-side sessions in Redis, their cookie, CSRF and the login rate limit."""

from __future__ import annotations

import re
import time

import pytest
from conftest import STRONG_PASSWORD, AuthActions, csrf_token_from
from redis import Redis
from redis.exceptions import AuthenticationError

from app.extensions import get_redis

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{40,}$")
PRODUCTION_SECRETS = {
    "APP_ENV": "production",
    "SECRET_KEY": "a-production-grade-secret-key-0123456789abcdef",
}


def session_cookie(response, name="session") -> str:
    cookies = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]
    assert len(cookies) == 1, response.headers.getlist("Set-Cookie")
    return cookies[0]


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def stored_session(app, sid: str) -> bytes | None:
    with app.app_context():
        return get_redis().get(f"flaskstack:session:{sid}")


def test_the_cookie_holds_only_an_id_and_the_data_sits_in_redis(app, auth, make_user):
    make_user("alice")
    response = auth.login("alice")
    header = session_cookie(response)
    sid = cookie_value(header)
    assert SESSION_ID.match(sid), "the cookie carries a bare random id, no signed payload"
    assert "." not in sid
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in header
    stored = stored_session(app, sid)
    assert stored is not None
    assert b"_user_id" in stored


def test_session_id_is_rotated_at_login(app, client, auth, make_user):
    make_user("alice")
    before = cookie_value(session_cookie(client.get("/login")))
    assert stored_session(app, before) is not None  # holds the login form's CSRF token
    csrf = csrf_token_from(client, "/login")
    response = client.post(
        "/login", data={"csrf_token": csrf, "username": "alice", "password": STRONG_PASSWORD}
    )
    after = cookie_value(session_cookie(response))
    assert after != before
    assert stored_session(app, before) is None
    assert stored_session(app, after) is not None


def test_logout_destroys_the_server_side_session(app, client, auth, make_user):
    make_user("alice")
    sid = cookie_value(session_cookie(auth.login("alice")))
    assert "alice" in client.get("/").get_data(as_text=True)

    response = auth.logout()
    cleared = session_cookie(response)
    assert "Expires=Thu, 01 Jan 1970" in cleared
    assert stored_session(app, sid) is None

    # Replaying the old cookie gets an anonymous visitor, not alice.
    client.set_cookie("session", sid)
    assert "Log in" in client.get("/").get_data(as_text=True)
    assert client.get("/posts/new").status_code == 302


@pytest.mark.parametrize("env", [{"SESSION_LIFETIME": "120"}], indirect=True)
def test_sessions_expire_in_redis_and_in_the_browser(app, auth, make_user):
    make_user("alice")
    header = session_cookie(auth.login("alice"))
    assert "Expires=" in header
    with app.app_context():
        ttl = get_redis().ttl(f"flaskstack:session:{cookie_value(header)}")
    assert 0 < ttl <= 120


@pytest.mark.parametrize("env", [PRODUCTION_SECRETS], indirect=True)
def test_production_cookie_is_secure_and_host_prefixed(app, make_user):
    make_user("alice")
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    auth = AuthActions(client)
    # Flask-WTF checks the Referer on HTTPS, as a browser sends it.
    client.environ_base["HTTP_REFERER"] = "https://localhost/login"
    header = session_cookie(auth.login("alice"), name="__Host-session")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in header
    assert "Domain=" not in header


def test_unknown_or_tampered_session_cookie_is_treated_as_a_stranger(client):
    for value in ("not-a-real-session-id", "x" * 4000, "%00%ff'\";--", "ünïcödé"):
        client.set_cookie("session", value)
        response = client.get("/")
        assert response.status_code == 200
        assert "Log in" in response.get_data(as_text=True)
    client.set_cookie("session", "forged-id")
    response = client.post("/posts/new", data={"title": "x", "body": "y"})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_forms_without_a_valid_csrf_token_are_rejected(client, auth, make_user):
    make_user("alice")
    response = client.post("/login", data={"username": "alice", "password": STRONG_PASSWORD})
    assert response.status_code == 400
    assert "The CSRF token is missing." in response.get_data(as_text=True)

    auth.login("alice")
    response = client.post("/posts/new", data={"csrf_token": "forged", "title": "t", "body": "b"})
    assert response.status_code == 400
    assert "CSRF token is invalid" in response.get_data(as_text=True)
    assert "No posts yet." in client.get("/u/alice").get_data(as_text=True)


@pytest.mark.parametrize("env", [{"LOGIN_RATE_LIMIT": "3 per minute"}], indirect=True)
def test_login_attempts_are_rate_limited(app, client, auth, make_user):
    make_user("alice")
    for _ in range(3):
        assert auth.login("alice", "wrong-password-123").status_code == 400
    started = time.monotonic()
    response = auth.login("alice")
    assert response.status_code == 429
    assert "Too many attempts" in response.get_data(as_text=True)
    assert "Retry-After" in response.headers
    assert time.monotonic() - started < 2
    # The counters are in Redis, shared by every worker and app host.
    with app.app_context():
        assert any(b"flaskstack:limit" in key for key in get_redis().keys("*"))
    # Another client address has its own budget.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.10"
    assert AuthActions(other).login("alice").status_code == 302


def test_redis_keys_are_not_readable_without_the_password(redis_server):
    anonymous = Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=2)
    with pytest.raises(AuthenticationError):
        anonymous.get("anything")
