"""A new comment queues a mail in Redis; the real worker process delivers it over SMTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from app.tasks import get_queue

REPO = Path(__file__).resolve().parents[2]


def run_worker(env: dict[str, str], wait: int = 10) -> subprocess.CompletedProcess:
    """`python -m app.worker --burst`, waiting up to `wait` seconds for Postgres and Redis."""
    return subprocess.run(
        [sys.executable, "-m", "app.worker", "--burst", "--wait", str(wait)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_worker_mails_the_author_about_a_new_comment(
    app, env, client, make_user, api_token, mail_sink
):
    make_user("bob")
    bob = api_token("bob")
    make_user("alice")
    alice = api_token("alice")
    client.post("/api/v1/posts", json={"title": "Worker post", "body": "b"}, headers=bob)
    client.post("/api/v1/posts/1/comments", json={"body": "Own comment"}, headers=bob)
    client.post("/api/v1/posts/1/comments", json={"body": "Hello Bob!"}, headers=alice)
    with app.app_context():
        assert get_queue().count == 1  # nobody is mailed about their own comment

    worker = run_worker(env)
    assert worker.returncode == 0, worker.stderr

    messages = mail_sink.wait_for(1)
    assert len(messages) == 1
    mail = messages[0]
    assert mail["To"] == "bob@example.org"
    assert mail["From"] == "flaskstack <noreply@flaskstack.test>"
    assert "Worker post" in mail["Subject"]
    body = mail.get_content()
    assert "alice commented" in body
    assert "Hello Bob!" in body
    assert "https://flaskstack.test/posts/1#comment-2" in body
    with app.app_context():
        assert get_queue().count == 0


def test_a_comment_deleted_before_the_job_runs_sends_nothing(
    app, env, client, auth, make_user, api_token, mail_sink
):
    make_user("bob")
    make_user("alice")
    bob = api_token("bob")
    client.post("/api/v1/posts", json={"title": "Post", "body": "b"}, headers=bob)
    auth.login("alice")
    auth.post_form("/posts/1/comments", {"body": "Oops"}, form_page="/posts/1")
    auth.post_form("/comments/1/delete", {}, form_page="/posts/1")

    worker = run_worker(env)
    assert worker.returncode == 0, worker.stderr
    assert mail_sink.messages == []


def test_the_worker_exits_when_services_stay_down(env, redis_server):
    redis_server.stop()
    try:
        worker = run_worker(env, wait=1)
    finally:
        redis_server.start()
    assert worker.returncode == 1
    assert "unavailable" in worker.stderr


def worker_check(env: dict[str, str]) -> int:
    """`python -m app.worker --check` (flaskstack.toml's worker_check: the Compose healthcheck)."""
    return subprocess.run(
        [sys.executable, "-m", "app.worker", "--check"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, timeout=60,
    ).returncode  # fmt: skip


def test_the_worker_check_passes_only_while_a_worker_of_this_host_runs(env):
    assert worker_check(env) == 1, "no worker runs yet"
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.worker", "--wait", "10"],
        cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while worker_check(env) != 0:
            assert worker.poll() is None, worker.stderr.read()
            assert time.monotonic() < deadline, "the running worker never passed its check"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    # A worker that stopped cleanly is unregistered at once.
    assert worker_check(env) == 1
