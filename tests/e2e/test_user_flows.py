"""A user's visit over HTTPS through the whole stack: nginx, gunicorn, Flask, Redis, Postgres."""

from __future__ import annotations

import re
import secrets

import pytest

from support.forms import SESSION_COOKIE, register, submit


@pytest.fixture
def user(sandbox, browser):
    name, password = register(browser, sandbox.url, "e2e-")
    return {"username": name, "password": password}


def test_anonymous_page_view_sets_no_cookie(sandbox, browser):
    home = browser.get(sandbox.url + "/", timeout=15)
    assert home.status_code == 200
    assert "Set-Cookie" not in home.headers


def test_register_post_comment_log_out_and_in_again(sandbox, browser, user):
    cookie = next(c for c in browser.cookies if c.name == SESSION_COOKIE)
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    # Only an opaque id: no dots/base64 payload like Flask's signed cookie sessions.
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", cookie.value)
    assert cookie.path == "/" and not cookie.domain_specified

    title = "Post " + secrets.token_hex(4)
    created = submit(browser, f"{sandbox.url}/posts/new", title=title, body="Hello over HTTP/2.")
    assert created.status_code == 200 and title in created.text
    post_url = created.url.split("#")[0]
    assert re.fullmatch(rf"{re.escape(sandbox.url)}/posts/\d+", post_url)

    commented = submit(browser, f"{post_url}/comments", form_url=post_url, body="First!")
    assert commented.status_code == 200 and "First!" in commented.text

    id_before_logout = browser.cookies.get(SESSION_COOKIE)
    logged_out = submit(browser, f"{sandbox.url}/logout", form_url=post_url)
    assert logged_out.status_code == 200
    assert browser.cookies.get(SESSION_COOKIE) is None

    # The old id is dead server-side: replaying it does not log anyone in.
    replay = browser.get(f"{sandbox.url}/posts/new", cookies={SESSION_COOKIE: id_before_logout},
                         allow_redirects=False, timeout=15)  # fmt: skip
    assert replay.status_code == 302 and "/login" in replay.headers["Location"]

    again = submit(browser, f"{sandbox.url}/login",
                   username=user["username"], password=user["password"])  # fmt: skip
    assert again.status_code == 200
    assert browser.cookies.get(SESSION_COOKIE) not in (None, id_before_logout)
    assert title in browser.get(post_url, timeout=15).text


def test_readiness_reports_postgres_and_redis(sandbox, browser):
    ready = browser.get(f"{sandbox.url}/readyz", timeout=15)
    assert ready.status_code == 200, ready.text
