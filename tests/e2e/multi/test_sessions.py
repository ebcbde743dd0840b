"""Sessions live in Redis, so a member stays logged in whichever app host answers."""

from __future__ import annotations

from collections import Counter


def test_a_session_survives_requests_served_by_every_app_host(sandbox, member, app_host_names):
    served_by: Counter[str] = Counter()
    for _ in range(24):
        # A page for members only: an unknown or lost session would redirect to /login.
        page = member.web.get(f"{sandbox.url}/posts/new", allow_redirects=False, timeout=15)
        assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
        assert member.username in page.text
        served_by[page.headers["X-Served-By"]] += 1
    print(f"one session's requests per app host: {dict(served_by)}")
    assert set(served_by) == app_host_names


def test_api_token_works_on_every_app_host(sandbox, member, app_host_names):
    served_by = Counter()
    for _ in range(12):
        me = member.api.get(f"{sandbox.url}/api/v1/me", timeout=15)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == member.username
        served_by[me.headers["X-Served-By"]] += 1
    assert set(served_by) == app_host_names
