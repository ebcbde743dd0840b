"""Settings of different programs that only work in a given order, read from where they live.

Each value has one home (gunicorn's in deploy/gunicorn.conf.py, nginx's in nginx/defaults.env,
the process managers' in docker-compose.yml and the app role's defaults); these tests hold the
relations between them, so changing one alone fails here instead of in production.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from app.config import (
    PRIMARY_CHANGE_WAIT_S,
    REDIS_SOCKET_TIMEOUT_S,
    STATEMENT_TIMEOUT_MS,
    engine_options,
)

ROOT = Path(__file__).resolve().parents[2]
# What a kill is late by, at most: gunicorn's arbiter checks its workers about once a second,
# systemd and Docker signal, the process exits, and a request may have queued for a worker.
MARGIN_S = 5


def gunicorn_setting(name: str) -> int:
    tree = ast.parse((ROOT / "deploy/gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not set in deploy/gunicorn.conf.py")


def longest_job_timeout() -> int:
    """The largest job_timeout= any enqueue in app/ passes (RQ stops a job after it)."""
    timeouts = [
        ast.literal_eval(keyword.value)
        for path in (ROOT / "app").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "job_timeout"
    ]
    assert timeouts, "no job_timeout in app/: every queued job needs one"
    return max(timeouts)


def seconds(duration: str | int) -> int:
    """nginx's and Compose's durations: 40, "40s", "1m30s"."""
    if isinstance(duration, int):
        return duration
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s?)?", duration.strip())
    assert parts and duration.strip(), f"not a duration: {duration!r}"
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def nginx_default(name: str) -> str:
    text = (ROOT / "nginx/defaults.env").read_text()
    value = re.search(rf'^{name}="?([^"\n]*)"?$', text, re.MULTILINE)
    assert value, f"{name} is not in nginx/defaults.env"
    return value[1]


def compose_service(name: str) -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]


def app_role_default(name: str):
    return yaml.safe_load((ROOT / "ansible/roles/app/defaults/main.yml").read_text())[name]


def test_a_stuck_request_is_stopped_in_the_app_before_nginx_gives_up():
    """Inside out (deploy/gunicorn.conf.py says why): the app's own timeouts answer its 503
    page, gunicorn's kill ends what they could not, and only then does nginx stop waiting."""
    timeout = gunicorn_setting("timeout")
    app_timeouts = {
        "statement_timeout": STATEMENT_TIMEOUT_MS / 1000,
        "pool_timeout": engine_options(read_only=False)["pool_timeout"],
        "Redis socket timeout": REDIS_SOCKET_TIMEOUT_S,
    }
    assert {name: s for name, s in app_timeouts.items() if s >= timeout} == {}
    assert seconds(nginx_default("PROXY_READ_TIMEOUT")) >= timeout + MARGIN_S


def test_a_request_waiting_for_a_new_primary_gets_the_apps_answer_before_gunicorns_kill():
    """While the Postgres primary changes, a request waits up to PRIMARY_CHANGE_WAIT_S, and its
    last run may still take a connection attempt and a statement (app/primary_change.py)."""
    connect_timeout = engine_options(read_only=False)["connect_args"]["connect_timeout"]
    longest = PRIMARY_CHANGE_WAIT_S + connect_timeout + STATEMENT_TIMEOUT_MS / 1000
    assert longest < gunicorn_setting("timeout")


def test_process_managers_wait_for_in_flight_requests_before_they_kill():
    graceful = gunicorn_setting("graceful_timeout")
    assert seconds(compose_service("app")["stop_grace_period"]) >= graceful + MARGIN_S
    assert app_role_default("app_web_stop_timeout") >= graceful + MARGIN_S


def test_process_managers_wait_for_the_current_job_before_they_kill():
    job = longest_job_timeout()
    assert seconds(compose_service("worker")["stop_grace_period"]) >= job + MARGIN_S
    assert app_role_default("app_worker_stop_timeout") >= job + MARGIN_S


def test_upstream_keepalive_has_one_value_for_both_platforms():
    snippet = "nginx/snippets/upstream-keepalive.conf"
    candidates = [
        *(ROOT / "nginx").rglob("*"),
        *(ROOT / "ansible/roles/nginx").rglob("*"),
    ]
    setting = re.compile(r"^\s*keepalive\s+\d+\s*;", re.MULTILINE)
    homes = sorted(
        str(path.relative_to(ROOT))
        for path in candidates
        if path.is_file() and setting.search(path.read_text())
    )
    assert homes == [snippet]
    include = "include flaskstack/snippets/upstream-keepalive.conf;"
    assert include in (ROOT / "nginx/upstream-compose.conf").read_text()
    assert include in (ROOT / "ansible/roles/nginx/templates/upstream.conf.j2").read_text()
