"""The real entry points: gunicorn with deploy/gunicorn.conf.py, and refusing bad settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tools.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")


def test_gunicorn_serves_the_app_with_the_shared_config(app, env):
    port = free_port()
    process = subprocess.Popen(
        [str(GUNICORN), "-c", "deploy/gunicorn.conf.py"],
        cwd=REPO,
        env={**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/readyz", headers={"X-Request-ID": "gunicorn-test-1"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.headers["X-Request-ID"] == "gunicorn-test-1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert "Latest posts" in response.read().decode()
    finally:
        process.send_signal(signal.SIGTERM)  # graceful shutdown
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "rid=gunicorn-test-1" in output, "the access log carries nginx's request id"
    assert "Booting worker" in output


def test_gunicorn_refuses_to_start_with_a_default_secret(env):
    started = time.monotonic()
    result = subprocess.run(
        [str(GUNICORN), "-c", "deploy/gunicorn.conf.py"],
        cwd=REPO,
        env={
            **os.environ,
            **env,
            "APP_ENV": "production",
            "SECRET_KEY": "changeme",
            "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "configuration error: SECRET_KEY must be" in result.stderr
    assert time.monotonic() - started < 30


def test_flask_cli_refuses_a_default_database_password_in_one_line(env):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("flask")), "--app", "app", "routes"],
        cwd=REPO,
        env={
            **os.environ,
            **env,
            "APP_ENV": "production",
            "SECRET_KEY": "x" * 40 + "-real-secret",
            "DATABASE_URL": "postgresql://flaskstack:postgres@127.0.0.1/flaskstack",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == ("DATABASE_URL must carry a non-default password in production")
