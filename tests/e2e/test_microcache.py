"""The edge's microcache of anonymous pages (nginx/snippets/microcache.conf): what it may serve,
to whom, and how late a new post reaches anonymous readers."""

from __future__ import annotations

import re
import secrets
import time

from support.forms import SESSION_COOKIE, submit

# nginx/snippets/microcache.conf keeps an answer "1s", counted on nginx's whole-second clock:
# a copy stored at 12:00:00.99 is fresh until 12:00:02, so for 1 to 2 s.
FRESH_SECONDS = 2.0
# The answer that fills the cache may have read the database just before a commit and been
# stored just after it: allow for one render on top of the freshness.
RENDER_ALLOWANCE = 0.5
# Served from a copy: a fresh one (HIT), or an old one while one request renews it.
FROM_CACHE = {"HIT", "STALE", "UPDATING"}


def cache_status(response) -> str:
    return response.headers.get("X-Cache-Status", "")


def test_anonymous_pages_are_answered_from_the_cache_with_this_requests_headers(sandbox, browser):
    statuses = []
    ids = set()
    for _ in range(5):
        page = browser.get(f"{sandbox.url}/", timeout=15)
        assert page.status_code == 200
        assert "Set-Cookie" not in page.headers
        statuses.append(cache_status(page))
        ids.add(page.headers["X-Request-ID"])
        # The security headers come with cached answers too.
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    print(f"five anonymous requests of /: {statuses}")
    assert "HIT" in statuses, statuses
    # Each answer names its own request, never the one that filled the cache.
    assert len(ids) == 5 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids


def test_the_api_and_static_files_are_not_microcached(sandbox, browser):
    stylesheet = re.search(r'href="(/static/[^"]+\.css)"', browser.get(f"{sandbox.url}/").text)
    for path in ("/api/v1/posts", stylesheet.group(1)):
        for _ in range(2):
            answer = browser.get(f"{sandbox.url}{path}", timeout=15)
            assert answer.status_code == 200 and "X-Cache-Status" not in answer.headers


def test_logged_in_users_never_get_a_cached_page(sandbox, browser, member):
    # An anonymous copy of the page is in the cache...
    for _ in range(3):
        assert "Log out" not in browser.get(f"{sandbox.url}/", timeout=15).text
    # ...and the member, with the session cookie, always gets their own page from the app.
    for _ in range(3):
        page = member.web.get(f"{sandbox.url}/", timeout=15)
        assert page.status_code == 200
        assert cache_status(page) == "BYPASS", page.headers
        assert "Log out" in page.text and member.username in page.text
        assert "private" in page.headers["Cache-Control"]
    # Credentials bypass it too, and what they got is not stored for anyone else.
    api_client_page = member.api.get(f"{sandbox.url}/", timeout=15)
    assert cache_status(api_client_page) == "BYPASS"
    assert "private" in api_client_page.headers["Cache-Control"]
    # Nor is a logged-in answer ever stored: anonymous readers never see the member's page.
    for _ in range(3):
        anonymous = browser.get(f"{sandbox.url}/", timeout=15)
        assert cache_status(anonymous) in FROM_CACHE | {"MISS", "EXPIRED"}
        assert "Log out" not in anonymous.text


def test_an_answer_that_sets_a_cookie_is_never_served_from_the_cache(sandbox, browser):
    """/posts/new sends anonymous visitors to the login page with a flash message, which lives
    in a new session: a cookie per visitor, which the cache must neither store nor repeat."""
    cookies = []
    for _ in range(3):
        browser.cookies.clear()  # a new visitor each time
        answer = browser.get(f"{sandbox.url}/posts/new", allow_redirects=False, timeout=15)
        assert answer.status_code == 302 and "/login" in answer.headers["Location"]
        assert cache_status(answer) not in FROM_CACHE, answer.headers
        assert "private" in answer.headers["Cache-Control"]
        cookies.append(answer.cookies.get(SESSION_COOKIE))
    assert None not in cookies and len(set(cookies)) == 3, cookies


def test_a_new_post_reaches_anonymous_readers_within_the_cache_time(sandbox, browser, member):
    """Once the copy made before the post has expired, anonymous readers get the post, except
    those served the old copy while one request renews it (UPDATING or STALE)."""
    for _ in range(3):  # a copy of the home page without the post is in the cache
        browser.get(f"{sandbox.url}/", timeout=15)
    title = "Microcache " + secrets.token_hex(4)
    created = submit(member.web, f"{sandbox.url}/posts/new", title=title, body="Fresh news.")
    assert created.status_code == 200 and title in created.text
    acknowledged = time.monotonic()

    seen = []  # (seconds after the acknowledgement, X-Cache-Status, has the post)
    while time.monotonic() - acknowledged < 5:
        page = browser.get(f"{sandbox.url}/", timeout=15)
        seen.append((time.monotonic() - acknowledged, cache_status(page), title in page.text))
        time.sleep(0.05)
    first = next((at for at, _, shown in seen if shown), None)
    late_stale = [(round(at, 2), status) for at, status, shown in seen
                  if not shown and at > FRESH_SECONDS + RENDER_ALLOWANCE]  # fmt: skip
    print(f"new post first shown to an anonymous reader {first:.2f} s after it was acknowledged"
          if first is not None else f"new post never shown: {seen}")  # fmt: skip
    assert first is not None, seen
    assert all(status in {"UPDATING", "STALE"} for _, status in late_stale), late_stale
    assert all(shown for at, _, shown in seen if at > first), seen
