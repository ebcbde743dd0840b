"""Fixtures for the unit and integration suites.

Integration tests run against real servers that this test run starts and stops itself:
Postgres (initdb into a temporary directory), Redis (with a password) and an SMTP sink, each
on a free loopback port. Every test gets an app built by `create_app` from an environment
mapping, exactly as production builds it from os.environ, and a clean database and Redis.
"""

from __future__ import annotations

import re
import signal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from app import create_app
from app.extensions import db, get_redis
from app.models import User
from tools.servers import MailSink, PostgresServer, RedisServer

# The shared helpers of the other suites (tests/support) assert too: rewritten like a test's own
# asserts, their failures show the values involved.
pytest.register_assert_rewrite("support")

STRONG_PASSWORD = "correct horse battery staple"
CSRF_FIELD = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'name="csrf_token" value="([^"]+)"'
)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def pytest_configure(config):
    # CI cancellation, `timeout` and `kill` send SIGTERM, which would end Python without
    # running fixture finalizers; as an interrupt, the servers are still stopped and removed.
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def mail_sink():
    sink = MailSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture(scope="session")
def base_env(postgres, redis_server, mail_sink) -> dict[str, str]:
    """The environment every integration test's app is built from."""
    return {
        "APP_ENV": "testing",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis_server.url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mail_sink.port),
        "MAIL_FROM": "flaskstack <noreply@flaskstack.test>",
        "SITE_URL": "https://flaskstack.test",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def migrated(base_env) -> None:
    """Apply the Alembic migrations once, as a deploy does."""
    from flask_migrate import upgrade

    app = create_app(base_env)
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture
def env(request, base_env) -> dict[str, str]:
    """The app's environment for one test; override values with
    `@pytest.mark.parametrize("env", [{"NAME": "value"}], indirect=True)`."""
    return {**base_env, **getattr(request, "param", {})}


@pytest.fixture
def app(env, migrated, mail_sink) -> Flask:
    app = create_app(env)
    with app.app_context():
        db.session.execute(text("TRUNCATE comments, posts, users RESTART IDENTITY CASCADE"))
        db.session.commit()
        get_redis().flushdb()
    mail_sink.messages.clear()
    yield app
    with app.app_context():
        for engine in db.engines.values():  # the read-write and the read-only engine
            engine.dispose()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_token_from(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    match = CSRF_FIELD.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


class AuthActions:
    """Log in and out through the real forms, so tests read as user stories."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def register(self, username="alice", password=STRONG_PASSWORD, email=None, follow=False):
        token = csrf_token_from(self.client, "/register")
        return self.client.post(
            "/register",
            data={
                "csrf_token": token,
                "username": username,
                "email": email or f"{username}@example.org",
                "password": password,
                "confirm": password,
            },
            follow_redirects=follow,
        )

    def login(self, username="alice", password=STRONG_PASSWORD, follow=False):
        token = csrf_token_from(self.client, "/login")
        return self.client.post(
            "/login",
            data={"csrf_token": token, "username": username, "password": password},
            follow_redirects=follow,
        )

    def logout(self):
        token = csrf_token_from(self.client, "/")
        return self.client.post("/logout", data={"csrf_token": token})

    def post_form(self, path: str, data: dict, form_page: str | None = None, follow=False):
        """POST a form the way a browser does: with the CSRF token from the page it is on."""
        token = csrf_token_from(self.client, form_page or path)
        return self.client.post(path, data={"csrf_token": token, **data}, follow_redirects=follow)


@pytest.fixture
def auth(client) -> AuthActions:
    return AuthActions(client)


@pytest.fixture
def make_user(app):
    """Create a user directly in the database (faster than the form when it is not the point)."""

    def make(username: str, password: str = STRONG_PASSWORD, admin: bool = False) -> User:
        with app.app_context():
            user = User(username=username, email=f"{username}@example.org", is_admin=admin)
            user.set_password(password)
            db.session.add(user)
            db.session.commit()
            db.session.refresh(user)
            db.session.expunge(user)
            return user

    return make


@pytest.fixture
def api_token(app):
    """Issue an API token for a user (by name) directly; returns the Authorization header."""

    def issue(username: str) -> dict[str, str]:
        with app.app_context():
            user = db.session.scalar(db.select(User).where(User.username == username))
            token = user.issue_api_token()
            db.session.commit()
        return {"Authorization": f"Bearer {token}"}

    return issue
