"""The app contract (docs/app-contract.md) with a second app: examples/guestbook built into a
release by deploy/build-release.sh and run from it the way the hosts run a release (its
manifest's migrate command, gunicorn with deploy/gunicorn.conf.py, settings only in the release's
.env), against a real Postgres; and an app taken from a git URL at a ref."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tools.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
GUESTBOOK = REPO / "examples/guestbook"
VENV_BIN = Path(sys.executable).parent


def build(tmp_path: Path, app: str | Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "deploy/build-release.sh")],
        env={**os.environ, "APP": str(app), "RELEASES_DIR": str(tmp_path / "releases"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def unpack(archive: str, into: Path) -> Path:
    into.mkdir()
    # GNU tar, as Ansible's unarchive on the hosts.
    subprocess.run(["tar", "-xzf", archive, "-C", str(into)], check=True)
    # The hosts give each release its own virtualenv from its lock; this test's has the same
    # versions (the guestbook's lock is compiled within the repository's pins).
    (into / ".venv").symlink_to(Path(sys.prefix))
    return into


@pytest.fixture(scope="module")
def guestbook_release(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("guestbook")
    result = build(tmp, GUESTBOOK)
    assert result.returncode == 0, result.stderr
    return unpack(result.stdout.strip(), tmp / "release")


def test_a_release_holds_the_apps_files_and_the_stacks(guestbook_release):
    files = {p.relative_to(guestbook_release).as_posix() for p in guestbook_release.rglob("*")}
    assert {
        "guestbook/__init__.py",
        "migrations/versions/0001_entries.py",
        "requirements.txt",
        "flaskstack.toml",
        "deploy/gunicorn.conf.py",
        "deploy/manifest.py",
        "deploy/metrics.py",
    } <= files
    assert not any(name.startswith("tests/") for name in files), "only what runs on the hosts"
    # nginx serves /static/ from deploy/static whatever directory the app names.
    assert (guestbook_release / "deploy/static/guestbook.css").is_file()
    record = json.loads((guestbook_release / "RELEASE.json").read_text())
    assert record["app"] == str(GUESTBOOK)


def test_the_guestbook_migrates_and_serves_from_its_release(guestbook_release, postgres):
    postgres.create_database("guestbook")
    database_url = postgres.url.rsplit("/", 1)[0] + "/guestbook"
    # Only in the release's .env, as the roles write it: the stack loads it for the app.
    (guestbook_release / ".env").write_text(
        f"APP_ENV=production\nSECRET_KEY={'k' * 40}\nDATABASE_URL={database_url}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY"}}
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"

    migrate = subprocess.run(
        [sys.executable, "deploy/manifest.py", "run", "migrate"],
        cwd=guestbook_release,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "Running upgrade  -> 0001" in migrate.stderr, "Flask-Migrate's flask db upgrade ran"

    port = free_port()
    process = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py"],
        cwd=guestbook_release,
        env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert "guestbook" in response.read().decode().lower()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output


def test_an_app_without_a_worker_runs_none(guestbook_release):
    result = subprocess.run(
        [sys.executable, "deploy/manifest.py", "run", "worker"],
        cwd=guestbook_release,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "declares no worker" in result.stderr


def test_the_blogs_release_serves_its_fingerprinted_static_files(tmp_path):
    result = build(tmp_path, REPO)
    assert result.returncode == 0, result.stderr
    release = unpack(result.stdout.strip(), tmp_path / "release")
    assert (release / "deploy/static").resolve() == (release / "app/static").resolve()
    assert (release / "deploy/static/dist/manifest.json").is_file()


def git(directory: Path, *args: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    return subprocess.run(
        ["git", *identity, "-C", str(directory), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_an_app_from_a_git_url_is_built_at_the_ref_given(tmp_path):
    origin = tmp_path / "origin"
    shutil.copytree(GUESTBOOK, origin, ignore=shutil.ignore_patterns("__pycache__"))
    git(origin, "init", "--quiet", "--initial-branch=main")
    git(origin, "add", ".")
    git(origin, "commit", "--quiet", "-m", "v1")
    git(origin, "tag", "v1")
    first = git(origin, "rev-parse", "HEAD")
    (origin / "guestbook/static/guestbook.css").write_text("body { color: red; }\n")
    git(origin, "commit", "--quiet", "-am", "v2")

    at_tag = build(tmp_path, f"file://{origin}@v1")
    assert at_tag.returncode == 0, at_tag.stderr
    release = unpack(at_tag.stdout.strip(), tmp_path / "at-tag")
    assert (release / "guestbook/static/guestbook.css").read_text() == (
        GUESTBOOK / "guestbook/static/guestbook.css"
    ).read_text()
    record = json.loads((release / "RELEASE.json").read_text())
    assert record["commit"] == first and record["dirty"] is False

    newest = build(tmp_path, f"file://{origin}")
    assert newest.returncode == 0, newest.stderr
    assert newest.stdout != at_tag.stdout, "another tree, another release id"

    missing = build(tmp_path, f"file://{origin}@no-such-ref")
    assert missing.returncode != 0
    assert "has no ref no-such-ref" in missing.stderr


def test_an_app_whose_lock_lacks_gunicorn_is_refused_at_build_time(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(GUESTBOOK, app, ignore=shutil.ignore_patterns("__pycache__"))
    lock = app / "requirements.txt"
    lock.write_text(lock.read_text().replace("gunicorn==", "not-gunicorn=="))
    git(app, "init", "--quiet")
    git(app, "add", ".")
    result = build(tmp_path, app)
    assert result.returncode != 0
    assert "does not pin gunicorn" in result.stderr


def test_a_hook_runs_from_the_release_and_a_broken_one_is_refused(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(GUESTBOOK, app, ignore=shutil.ignore_patterns("__pycache__"))
    with (app / "flaskstack.toml").open("a") as manifest:
        manifest.write('\n[hooks]\npre-deploy = "hooks/pre-deploy"\n')
    hook = app / "hooks" / "pre-deploy"
    hook.parent.mkdir()
    hook.write_text('#!/bin/sh\necho "$FLASKSTACK_HOOK $FLASKSTACK_RELEASE $(pwd)" > "$OUT"\n')
    git(app, "init", "--quiet")
    git(app, "add", ".")
    refused = build(tmp_path, app)
    assert refused.returncode != 0, "a hook that cannot run is refused when the release is built"
    assert "hooks/pre-deploy in flaskstack.toml is not a tracked, executable file" in refused.stderr

    hook.chmod(0o755)
    git(app, "add", ".")
    built = build(tmp_path, app)
    assert built.returncode == 0, built.stderr
    release = unpack(built.stdout.strip(), tmp_path / "release")
    out = tmp_path / "hook.out"
    env = {
        **os.environ,
        "FLASKSTACK_HOOK": "pre-deploy",
        "FLASKSTACK_RELEASE": "r1",
        "OUT": str(out),
    }
    for hook_name in ("pre-deploy", "post-deploy"):  # post-deploy is not declared: nothing runs
        ran = subprocess.run(
            [sys.executable, "deploy/manifest.py", "run", hook_name],
            cwd=release, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
    assert out.read_text() == f"pre-deploy r1 {release}\n"
