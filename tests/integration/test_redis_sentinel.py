"""Redis through Sentinel: REDIS_URL names the Sentinels (`redis+sentinel://…`), and the app's
sessions, its rate limits and its worker all follow the master they name, also while it moves.

Real servers: a Redis master, two replicas and three Sentinels on loopback, with the stack's
ACL users (tools/servers.py) and short Sentinel timings. A test that fails the master over gets
a group of its own; the others share one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import STRONG_PASSWORD, AuthActions
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db, limiter
from app.redis_connection import MASTER_RECHECK_INTERVAL_S
from app.tasks import get_queue
from tools.servers import REDIS_APP_USER, RedisSentinelGroup

REPO = Path(__file__).resolve().parents[2]
SIGNED_IN = "Log out"  # the header's button, on every page of a signed-in user


@pytest.fixture(scope="module", autouse=True)
def limiter_options_restored():
    # One Limiter serves every app of the test run, and each app adds its storage options to
    # the ones before (Flask-Limiter's init_app): the Sentinel ones would reach later apps.
    saved = dict(limiter._storage_options)
    yield
    limiter._storage_options.clear()
    limiter._storage_options.update(saved)


def started_group() -> RedisSentinelGroup:
    group = RedisSentinelGroup()
    try:
        group.start()
    except BaseException:
        group.close()
        raise
    return group


@pytest.fixture(scope="module")
def shared_group():
    group = started_group()
    yield group
    group.close()


@pytest.fixture
def own_group():
    """A group for one test, which may fail its master over."""
    group = started_group()
    yield group
    group.close()


@pytest.fixture
def env(base_env, shared_group) -> dict[str, str]:
    """conftest's `app` (a clean database and Redis) is built on the shared group."""
    return {**base_env, "REDIS_URL": shared_group.url}


@pytest.fixture
def web_worker(app, base_env):
    """Build the app on a group, as one gunicorn worker of its own (own Redis connections)."""
    built = []

    def build(group: RedisSentinelGroup) -> FlaskClient:
        worker = create_app({**base_env, "REDIS_URL": group.url})
        built.append(worker)
        return worker.test_client()

    yield build
    for worker in built:
        with worker.app_context():
            for engine in db.engines.values():
                engine.dispose()


def share_session(source: FlaskClient, target: FlaskClient) -> None:
    """The browser's next request goes to another worker with the same cookie."""
    target.set_cookie("session", source.get_cookie("session").value)


@dataclass
class Browsing:
    """Requests of signed-in users in a loop, each one's start, failure (or None), duration."""

    requests: list[tuple[float, str | None, float]] = field(default_factory=list)

    def run(self, steps: list[Callable[[int], str | None]], stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            failure = steps[n % len(steps)](n)
            self.requests.append((started, failure, time.monotonic() - started))
            n += 1
            time.sleep(0.02)

    @property
    def failures(self) -> list[str]:
        return [failure for _, failure, _ in self.requests if failure]

    def first_success_after(self, moment: float) -> float:
        """Seconds from `moment` until a request started after it answered."""
        return min(
            started + duration - moment
            for started, failure, duration in self.requests
            if started >= moment and not failure
        )

    def slowest(self) -> float:
        return max(duration for _, _, duration in self.requests)


def read_page(client: FlaskClient, path: str = "/") -> str | None:
    response = client.get(path)
    if response.status_code != 200:
        return f"GET {path}: {response.status_code}"
    if SIGNED_IN not in response.get_data(as_text=True):
        return f"GET {path}: signed out"
    return None


def publish(auth: AuthActions, n: int) -> str | None:
    """A new post: a Postgres write, and a Redis one (its flash message, in the session)."""
    response = auth.post_form("/posts/new", {"title": f"Post {n}", "body": "b"})
    if response.status_code != 302:
        return f"POST /posts/new: {response.status_code}"
    return None


def in_background(action: Callable[[], None]) -> tuple[threading.Thread, threading.Event]:
    """Run `action` beside the request loop; the event says when it is done."""
    done = threading.Event()

    def run() -> None:
        try:
            action()
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_a_switchover_fails_no_request_and_logs_nobody_out(web_worker, make_user, own_group):
    make_user("alice")
    make_user("bob")
    writer, reader = web_worker(own_group), web_worker(own_group)
    alice = AuthActions(writer)
    assert alice.login("alice").status_code == 302
    share_session(writer, reader)
    old_master = own_group.master_port()

    def switch_over() -> None:
        time.sleep(0.3)
        own_group.failover()
        own_group.wait_for_master_other_than(old_master)
        # Every worker has asked the Sentinels again since the switch.
        time.sleep(MASTER_RECHECK_INTERVAL_S + 0.5)

    # One worker reads and writes, the other only reads, as a browser spread over both.
    browsing = Browsing()
    thread, done = in_background(switch_over)
    browsing.run(
        [lambda n: read_page(reader), lambda n: read_page(writer), lambda n: publish(alice, n)],
        stop=done,
    )
    thread.join()
    assert browsing.failures == []
    print(
        f"\nswitchover: {len(browsing.requests)} requests, none failed, "
        f"the slowest took {browsing.slowest():.2f} s"
    )

    # A login right after the switch is seen by the worker that had only read from the old
    # master, which still answers as a master until Sentinel demotes it.
    bob_writer, bob_reader = writer.application.test_client(), reader.application.test_client()
    assert AuthActions(bob_writer).login("bob").status_code == 302
    share_session(bob_writer, bob_reader)
    assert read_page(bob_reader) is None
    assert read_page(reader) is None


def test_a_crashed_master_costs_requests_a_wait_of_seconds(web_worker, make_user, own_group):
    make_user("alice")
    client = web_worker(own_group)
    alice = AuthActions(client)
    assert alice.login("alice").status_code == 302
    old_master = own_group.master_port()
    killed_at = []

    def crash() -> None:
        time.sleep(0.3)
        killed_at.append(time.monotonic())
        own_group.nodes[old_master].kill()
        own_group.wait_for_master_other_than(old_master)
        time.sleep(1)

    browsing = Browsing()
    thread, done = in_background(crash)
    browsing.run([lambda n: read_page(client), lambda n: publish(alice, n)], stop=done)
    thread.join()
    recovered = browsing.first_success_after(killed_at[0])
    print(
        f"\ncrash: {len(browsing.failures)} of {len(browsing.requests)} requests failed "
        f"({sorted(set(browsing.failures))}), the first success {recovered:.2f} s after the "
        f"kill, the slowest request {browsing.slowest():.2f} s"
    )
    assert recovered < 10
    # Once the Sentinels name the new master, every request works again.
    assert [failure for _, failure, _ in browsing.requests[-10:]] == [None] * 10


def test_login_attempts_are_counted_across_a_failover(web_worker, make_user, own_group):
    make_user("alice")
    client = web_worker(own_group)
    guesser = AuthActions(client)

    def attempts(count: int) -> list[int]:
        return [guesser.login("alice", "wrong password").status_code for _ in range(count)]

    assert 429 not in attempts(6)
    old_master = own_group.master_port()
    own_group.failover()
    new_master = own_group.wait_for_master_other_than(old_master)
    # LOGIN_RATE_LIMIT: 10 per minute, counted in Redis, now on the new master.
    assert 429 not in attempts(4)
    assert attempts(1) == [429]
    assert guesser.login("alice", STRONG_PASSWORD).status_code == 429
    counters = own_group.admin(new_master).scan_iter(match="*flaskstack:limit*")
    assert list(counters)


def test_a_job_queued_through_sentinel_is_done_by_the_worker(
    app, env, client, make_user, api_token, mail_sink
):
    make_user("bob")
    make_user("alice")
    client.post(
        "/api/v1/posts", json={"title": "Sentinel post", "body": "b"}, headers=api_token("bob")
    )
    client.post("/api/v1/posts/1/comments", json={"body": "Hello Bob!"}, headers=api_token("alice"))
    with app.app_context():
        assert get_queue().count == 1

    worker = subprocess.run(
        [sys.executable, "-m", "app.worker", "--burst", "--wait", "10"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    messages = mail_sink.wait_for(1)
    assert [mail["To"] for mail in messages] == ["bob@example.org"]
    with app.app_context():
        assert get_queue().count == 0


def test_an_idle_worker_told_to_stop_exits_at_once(env):
    """SIGTERM (systemd's stop, a deploy's restart) interrupts the worker's blocking wait for a
    job; its goodbye to Redis must not queue behind that wait on the same connection."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.worker", "--wait", "10"],
        cwd=REPO, env={**os.environ, **env, "LOG_LEVEL": "DEBUG"}, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # RQ's debug line as it starts to wait: its signal handlers are in place by then (its
        # "*** Listening on" at INFO comes before them, and a SIGTERM then just kills it).
        for line in worker.stderr:
            if re.search(r"Worker \S+: \*\*\* Listening on", line):
                break
        worker.send_signal(signal.SIGTERM)
        # RQ's blocking wait lasts minutes: a worker stuck behind it never ends in time.
        worker.wait(timeout=30)
    finally:
        worker.kill()
        rest = worker.stderr.read()
    assert worker.returncode == 0, rest[-2000:]


def wait_for_services(redis_url: str, timeout: int) -> subprocess.CompletedProcess:
    """deploy/wait-for-services.py with REDIS_URL alone (Postgres is another test's)."""
    return subprocess.run(
        [sys.executable, "deploy/wait-for-services.py", str(timeout)],
        cwd=REPO, env={"PATH": os.environ["PATH"], "REDIS_URL": redis_url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_wait_for_services_waits_for_the_master_the_sentinels_name(shared_group):
    assert wait_for_services(shared_group.url, 5).returncode == 0
    wrong = shared_group.url.replace(shared_group.app_password, "not-the-password")
    refused = wait_for_services(wrong, 1)
    assert refused.returncode == 1
    assert "WRONGPASS" in refused.stderr
    unknown = wait_for_services(shared_group.url.rsplit("/", 1)[0] + "/nosuchservice", 1)
    assert "knows no master named 'nosuchservice'" in unknown.stderr
    assert REDIS_APP_USER in shared_group.url
