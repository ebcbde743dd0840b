"""Hostile input, sessions and ownership: forged and planted session cookies are never adopted,
and one user cannot change another's post or comment."""

from __future__ import annotations

import secrets

from support.forms import SESSION_COOKIE, auth_post, csrf_token
from support.ledger import check_answer, one_answer
from support.raw_http import ANSWER_TIMEOUT, request_bytes


def test_forged_session_cookies_are_anonymous_and_never_adopted(
    sandbox, ledger, users, new_browser
):
    forged = [
        b"deadbeef",
        secrets.token_urlsafe(32).encode(),
        b"A" * 4000,
        "Ünïcödé☃".encode(),
        b"\xff\xfe\xfd",
        b'"a=b; c=d"',
        b"a=b=c",
        b"*",
        b"../../../etc/passwd",
        b"%00",
        b"eyJfZnJlc2giOmZhbHNlfQ.ZZZ.abc",  # a Flask signed-cookie session
    ]
    with ledger.case("forged session cookies") as case:
        for value in forged:
            for cookie in (
                b"__Host-session=" + value,
                b"__Host-session=" + value + b"; __Host-session=other",
            ):
                page = one_answer(
                    sandbox,
                    case,
                    request_bytes("/", [b"Cookie: " + cookie], sandbox=sandbox),
                    {200},
                )
                assert b"Log out" not in page.body and page.header("Set-Cookie") is None
            answer = one_answer(
                sandbox,
                case,
                request_bytes("/posts/new", [b"Cookie: __Host-session=" + value], sandbox=sandbox),
                {302},
            )
            assert answer.header("Location").startswith("/login")
            issued = answer.header("Set-Cookie") or ""
            assert not issued.startswith(f"{SESSION_COOKIE}={value.decode('latin-1')};"), issued
        one_answer(
            sandbox,
            case,
            request_bytes("/", [b"Cookie: __Host-session=\x01\x02"], sandbox=sandbox),
            {200, 400},
        )

        # Session fixation: an id the attacker planted is replaced, and again at log-in.
        alice = users["alice"]
        browser = new_browser()
        planted = secrets.token_urlsafe(32)
        browser.cookies.set(SESSION_COOKIE, planted, domain=sandbox.domain, path="/")
        form = browser.get(f"{sandbox.url}/login", timeout=ANSWER_TIMEOUT)
        check_answer(case, form, {200})
        before_login = browser.cookies.get(SESSION_COOKIE)
        assert before_login != planted
        logged_in = auth_post(
            lambda: browser.post(
                f"{sandbox.url}/login",
                headers={"Referer": form.url},
                timeout=ANSWER_TIMEOUT,
                data={
                    "csrf_token": csrf_token(form.text),
                    "username": alice["name"],
                    "password": alice["password"],
                },
            )
        )
        check_answer(case, logged_in, {200})
        assert "Log out" in logged_in.text
        assert browser.cookies.get(SESSION_COOKIE) not in (planted, before_login, None)


def test_another_users_post_and_comment_cannot_be_changed(sandbox, ledger, users):
    alice, mallory = users["alice"], users["mallory"]
    site, attacker = sandbox.url, mallory["browser"]
    post_url = f"{site}/posts/{alice['post']['id']}"
    with ledger.case("other users' data") as case:
        comment = alice["browser"].post(
            f"{site}/api/v1/posts/{alice['post']['id']}/comments",
            headers=alice["api"],
            json={"body": "Alice's comment."},
            timeout=ANSWER_TIMEOUT,
        )
        check_answer(case, comment, {201})
        check_answer(case, attacker.get(f"{post_url}/edit", timeout=ANSWER_TIMEOUT), {403})
        token = csrf_token(attacker.get(post_url, timeout=ANSWER_TIMEOUT).text)
        for url, data in [
            (f"{post_url}/edit", {"title": "Owned", "body": "Owned."}),
            (f"{post_url}/delete", {}),
            (f"{site}/comments/{comment.json()['id']}/delete", {}),
        ]:
            answer = attacker.post(
                url,
                data={"csrf_token": token, **data},
                headers={"Referer": post_url},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, answer, {403})
            # Without the CSRF token: refused before the permission check.
            check_answer(
                case,
                attacker.post(
                    url, data=data, headers={"Referer": post_url}, timeout=ANSWER_TIMEOUT
                ),
                {400},
            )
        unchanged = attacker.get(
            f"{site}/api/v1/posts/{alice['post']['id']}", timeout=ANSWER_TIMEOUT
        )
        check_answer(case, unchanged, {200})
        assert unchanged.json() == alice["post"]
        still = attacker.get(
            f"{site}/api/v1/comments/{comment.json()['id']}", timeout=ANSWER_TIMEOUT
        )
        check_answer(case, still, {200})
        assert still.json()["body"] == "Alice's comment."
