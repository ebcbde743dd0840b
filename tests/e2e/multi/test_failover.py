"""An app host powers off under a steady load of API writes.

nginx balances over every app host (max_fails/fail_timeout) and retries a request on another
host when it could not reach the first one, so the site keeps taking writes. What must hold: no
write the site acknowledged (2xx) is lost, and soon after the stop every write is served by the
remaining hosts.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from support.load import WriteLoad

BEFORE_STOP = 6  # seconds of load with every app host up
AFTER_STOP = 12  # seconds of load after the host is off
# After the stop returned, requests still in flight to the stopped host may end badly; from this
# many seconds on, every write must be acknowledged by the remaining hosts.
SETTLE = 3


def comments_of(sandbox, api: requests.Session, post_id: int) -> dict[int, str]:
    """Every comment of the post, read back through the API page by page."""
    found: dict[int, str] = {}
    url: str | None = f"{sandbox.url}/api/v1/posts/{post_id}/comments?limit=100"
    while url:
        page = api.get(url, timeout=30)
        assert page.status_code == 200, page.text
        found.update((c["id"], c["body"]) for c in page.json()["comments"])
        url = page.links.get("next", {}).get("url")
    return found


def wait_until_served_by(sandbox, api: requests.Session, name: str, seconds: int = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            me = api.get(f"{sandbox.url}/api/v1/me", timeout=10)
            if me.headers.get("X-Served-By") == name:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{name} did not serve again within {seconds} s of being started")


def test_stopping_an_app_host_under_write_load_loses_no_acknowledged_write(
    sandbox, member, app_host_names
):
    post = member.api.post(
        f"{sandbox.url}/api/v1/posts",
        json={"title": "Failover", "body": "Comments under load."},
        timeout=15,
    )
    assert post.status_code == 201, post.text
    victim = sandbox.hosts_in("app")[-1]
    victim_name = sandbox.ssh(victim, "hostname").stdout.strip()

    load = WriteLoad(sandbox.url, member.api, post.json()["id"])
    load.start()
    try:
        time.sleep(BEFORE_STOP)
        stop_began = load.clock()
        sandbox.cli("stop", victim["name"])
        stopped = load.clock()
        time.sleep(AFTER_STOP)
    finally:
        load.stop()
        sandbox.cli("start", victim["name"])
    print(f"{victim['name']} stopped from {stop_began:.1f} s to {stopped:.1f} s")
    print(load.per_second())
    acknowledged = load.acknowledged
    before = Counter(w.served_by for w in acknowledged if w.started < stop_began)
    after = Counter(w.served_by for w in acknowledged if w.started >= stopped)
    print(f"acknowledged writes per app host before the stop: {dict(before)}")
    print(f"acknowledged writes per app host after the stop:  {dict(after)}")
    print(f"requests that failed: {dict(load.failures()) or 'none'}")

    # Every acknowledged write is in the database, as written.
    stored = comments_of(sandbox, member.api, post.json()["id"])
    lost = load.missing_from(stored)
    assert lost == [], f"{len(lost)} acknowledged writes missing or altered, e.g. {lost[:3]}"

    # The load reached every app host while all were up.
    assert set(before) == app_host_names, before
    # Soon after the stop, the edge sends nothing to the stopped host: every write and read
    # succeeds on the others, in every second, with no stall.
    settled = [w for w in load.requests if w.started >= stopped + SETTLE]
    assert settled, "no writes after the stop"
    assert {w.status for w in settled} == {"201", "200"}, Counter(w.status for w in settled)
    assert victim_name not in {w.served_by for w in settled}
    busy_seconds = {int(w.started) for w in settled}
    expected_seconds = set(range(int(stopped + SETTLE) + 1, int(load.ended)))
    assert expected_seconds <= busy_seconds, (
        f"seconds without writes: {expected_seconds - busy_seconds}"
    )

    # Powered on again, the host rejoins the upstream by itself.
    wait_until_served_by(sandbox, member.api, victim_name)
