"""Hostile input in forms and the API: invalid UTF-8 and control characters, and strings that
mean something to SQL, HTML, Jinja, printf or a shell (stored and shown as text, never run)."""

from __future__ import annotations

from markupsafe import escape

from support.forms import auth_post, csrf_token, submit
from support.ledger import check_answer, one_answer
from support.raw_http import ANSWER_TIMEOUT, request_bytes

# Strings that mean something to SQL, HTML, Jinja, printf or a shell: stored and shown as text.
INJECTIONS = [
    "' OR 1=1--",
    '"; DROP TABLE posts;--',
    "<script>alert(1)</script>",
    "{{7*7}}",
    "%s%n%x",
    "${7*7}",
    "<img src=x onerror=alert(1)>",
    "1; SELECT pg_sleep(10)",
    "$(reboot)",
]
# Strings whose meaning as SQL would change the query: tried where the app expects a number.
SQL_IN_NUMBERS = ["1 OR 1=1", "1' OR '1'='1", "1;DROP TABLE posts", "1 UNION SELECT 1", "-1"]


def test_invalid_utf8_and_control_characters_get_a_4xx_or_are_ignored(sandbox, ledger, users):
    alice = users["alice"]
    with ledger.case("invalid UTF-8, control characters") as case:
        for target in [
            b"/u/%ff%fe",
            b"/u/%c3%28",
            b"/u/%ed%a0%80",
            b"/posts/%ff",
            b"/u/\xff\xfe",
            b"/u/a%01b",
            b"/u/a%7fb",
            b"/?before=%ff",
            b"/?before=%00",
            b"/api/v1/posts?limit=%ff%fe&before=%00",
            b"/?q=\x7f\x01",
        ]:
            one_answer(sandbox, case, request_bytes(target, sandbox=sandbox), {200, 400, 404})
        for header in [
            b"User-Agent: \xff\xfe\x80",
            b"User-Agent: \x01\x02\x7f",
            b"Referer: \xff\xfe",
            b"Referer: javascript:alert(1)",
            b"X-Request-ID: <script>\xff",
            b"Accept-Language: \xff;q=\x00",
            b"Authorization: Bearer \xff\xfe",
            b"Authorization: Bearer fst_" + b"a" * 5000,
            b"Content-Type: \xff/\xfe",
            b"If-None-Match: \xff",
        ]:
            answer = one_answer(
                sandbox, case, request_bytes("/api/v1/me", [header], sandbox=sandbox), {400, 401}
            )
            assert b"<script>" not in (answer.header("X-Request-ID") or "").encode()

        # Forms: raw bytes in the urlencoded body, with a valid CSRF token.
        browser = alice["browser"]
        form = f"{sandbox.url}/posts/new"
        token = csrf_token(browser.get(form, timeout=ANSWER_TIMEOUT).text).encode()
        for body in [
            b"title=%FF%FE&body=x",
            b"title=\xff\xfe&body=x",
            b"title=a%00b&body=x",
            b"title=ok&body=%C3%28",
            b"title=%ED%A0%80&body=x",
        ]:
            answer = browser.post(
                form,
                data=b"csrf_token=" + token + b"&" + body,
                timeout=ANSWER_TIMEOUT,
                headers={"Referer": form, "Content-Type": "application/x-www-form-urlencoded"},
            )
            check_answer(case, answer, {400})
        # JSON: bytes that are not UTF-8, NUL, lone surrogates, a body nested too deep.
        for body in [
            b'{"title": "\xff\xfe", "body": "x"}',
            b'{"title": "a\\u0000b", "body": "x"}',
            b'{"title": "\\ud800", "body": "x"}',
            b"[" * 50_000,
            b'{"title": ' + b"1" * 5000 + b', "body": "x"}',
            b'\xef\xbb\xbf{"title": 1}',
        ]:
            answer = browser.post(
                f"{sandbox.url}/api/v1/posts",
                data=body,
                timeout=ANSWER_TIMEOUT,
                headers={**alice["api"], "Content-Type": "application/json"},
            )
            check_answer(case, answer, {400})
            assert answer.json()["message"], answer.text


def test_injection_strings_are_refused_or_stored_literally_and_escaped(
    sandbox, ledger, users, new_browser
):
    alice, mallory = users["alice"], users["mallory"]
    site, browser = sandbox.url, alice["browser"]
    with ledger.case("SQL/HTML/template injection") as case:
        # Registration and log-in: all fields in one request each (the rate limit).
        register = auth_post(
            lambda: submit(
                new_browser(),
                f"{site}/register",
                username="' OR 1=1--",
                email="<script>alert(1)</script>@x.org",
                password="{{7*7}}%s%n' OR '1'='1",
                confirm='"; DROP TABLE users;--',
            )
        )
        check_answer(case, register, {400})
        for username, password in [("' OR 1=1--", "' OR '1'='1"), (alice["name"] + "'--", "x")]:
            login = auth_post(
                lambda u=username, p=password: submit(
                    new_browser(), f"{site}/login", username=u, password=p
                )
            )
            check_answer(case, login, {400})
            assert "Unknown username or wrong password." in login.text
        token = auth_post(
            lambda: new_browser().post(
                f"{site}/api/v1/tokens",
                timeout=ANSWER_TIMEOUT,
                json={"username": alice["name"] + "' OR 1=1--", "password": "' OR '1'='1"},
            )
        )
        check_answer(case, token, {401})

        # Posts and comments, by form and by API: stored as typed, shown escaped.
        for text in INJECTIONS:
            created = submit(browser, f"{site}/posts/new", title=text, body=text + " body")
            check_answer(case, created, {200})
            # Shown as typed: markup escaped, never rendered, templates never evaluated.
            assert escape(text) in created.text, text
            assert text == escape(text) or text not in created.text, text
            commented = submit(
                browser,
                created.url.split("#")[0] + "/comments",
                form_url=created.url.split("#")[0],
                body=text,
            )
            check_answer(case, commented, {200})
            assert escape(text) in commented.text
            api_post = browser.post(
                f"{site}/api/v1/posts",
                headers=alice["api"],
                json={"title": text, "body": text},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, api_post, {201})
            assert api_post.json()["title"] == text
            api_comment = browser.post(
                f"{site}/api/v1/posts/{api_post.json()['id']}/comments",
                headers=alice["api"],
                json={"body": text},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, api_comment, {201})
            assert api_comment.json()["body"] == text
        page = browser.get(f"{site}/", timeout=ANSWER_TIMEOUT)
        check_answer(case, page, {200})
        for markup in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>"):
            assert markup not in page.text and escape(markup) in page.text, markup

        # Numbers that carry SQL: in cursors, page sizes and path ids.
        baseline = browser.get(f"{site}/api/v1/posts", timeout=ANSWER_TIMEOUT).json()["posts"]
        for value in SQL_IN_NUMBERS:
            for param in ("before", "limit"):
                listed = browser.get(
                    f"{site}/api/v1/posts", params={param: value}, timeout=ANSWER_TIMEOUT
                )
                check_answer(case, listed, {200})
                # An invalid cursor is ignored: never more rows than a plain first page.
                assert len(listed.json()["posts"]) <= len(baseline), (param, value)
            comments = browser.get(
                f"{site}/api/v1/posts/{alice['post']['id']}/comments",
                params={"after": value, "limit": value},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, comments, {200})
            for path in (
                f"/posts/{value}",
                f"/api/v1/posts/{value}",
                f"/u/{value}",
                f"/api/v1/comments/{value}",
            ):
                check_answer(case, browser.get(site + path, timeout=ANSWER_TIMEOUT), {404})
        for value in ("99999999999999999999", "0", "2147483648"):
            for path in (f"/posts/{value}", f"/api/v1/posts/{value}", f"/api/v1/comments/{value}"):
                check_answer(case, browser.get(site + path, timeout=ANSWER_TIMEOUT), {404})
            huge = browser.get(
                f"{site}/api/v1/posts",
                params={"before": value, "limit": value},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, huge, {200})
            assert len(huge.json()["posts"]) <= 100

        # Nothing was dropped or rewritten: both users' first posts read as created.
        for user in (alice, mallory):
            again = browser.get(f"{site}/api/v1/posts/{user['post']['id']}", timeout=ANSWER_TIMEOUT)
            check_answer(case, again, {200})
            assert again.json() == user["post"]
        me = browser.get(f"{site}/api/v1/me", headers=mallory["api"], timeout=ANSWER_TIMEOUT)
        check_answer(case, me, {200})
        assert me.json()["username"] == mallory["name"]
