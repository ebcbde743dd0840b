"""The guestbook against a real Postgres that this test run starts (tools/servers.py), built by
`create_app` from an environment as the stack's .env gives it, migrated as a deploy does."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from guestbook import ConfigError, create_app
from guestbook.extensions import db
from tools.servers import PostgresServer

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def env(postgres) -> dict[str, str]:
    return {"APP_ENV": "testing", "SECRET_KEY": "a-test-key", "DATABASE_URL": postgres.url}


@pytest.fixture
def app(env) -> Flask:
    app = create_app(env)
    with app.app_context():
        upgrade()
        db.session.execute(text("TRUNCATE entries RESTART IDENTITY"))
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


def sign(client: FlaskClient, **form: str):
    token = CSRF_FIELD.search(client.get("/").get_data(as_text=True)).group(1)
    return client.post("/", data={"csrf_token": token, **form})


def entries(app) -> list[tuple[str, str]]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(text("SELECT name, message FROM entries"))]


def test_a_visitor_signs_and_everyone_reads_it(app, client):
    assert "Nobody has signed yet." in client.get("/").get_data(as_text=True)
    response = sign(client, name="Ada", message="Hello from the stack.")
    assert response.status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert "Thank you for signing" in page and "Hello from the stack." in page
    stranger = app.test_client().get("/").get_data(as_text=True)
    assert "Hello from the stack." in stranger and "Thank you" not in stranger
    assert entries(app) == [("Ada", "Hello from the stack.")]


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"name": "", "message": "hi"}, "Your name must be 1 to 80"),
        ({"name": "x" * 81, "message": "hi"}, "Your name must be 1 to 80"),
        ({"name": "Ada", "message": ""}, "Your message must be 1 to 2000"),
        ({"name": "Ada", "message": "bell \x07"}, "Control characters"),
    ],
)
def test_bad_input_gets_the_page_back_with_what_to_fix_and_stores_nothing(app, client, form, says):
    response = sign(client, **form)
    assert response.status_code == 400
    assert says in response.get_data(as_text=True)
    assert entries(app) == []


def test_a_form_without_its_token_is_refused_clearly(app, client):
    response = client.post("/", data={"name": "Ada", "message": "hi"})
    assert response.status_code == 400
    assert "The form expired" in response.get_data(as_text=True)
    assert entries(app) == []


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/nope", 404), ("DELETE", "/", 405)]
)
def test_errors_are_pages_not_stack_traces(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert "<h1>" in response.get_data(as_text=True)


def test_too_large_a_form_is_a_413(client):
    response = client.post("/", data={"message": "x" * 100_000})
    assert response.status_code == 413


def test_the_cookie_is_flasks_signed_session_and_pages_with_it_are_private(app, client):
    response = client.get("/")
    cookie = client.get_cookie("guestbook")
    assert cookie is not None and cookie.value.count(".") == 2  # itsdangerous: data.time.sig
    assert response.cache_control.private
    # A probe (the deploy gate's, without cookies) starts no session: nothing to keep.
    probe = app.test_client().get("/healthz")
    assert probe.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in probe.headers


def test_static_files_keep_their_names(client):
    response = client.get("/static/guestbook.css")
    assert response.status_code == 200 and b"no fingerprint" in response.data
    assert '/static/guestbook.css"' in client.get("/").get_data(as_text=True)


def test_readiness_follows_the_database(env):
    assert create_app(env).test_client().get("/readyz").status_code == 200
    down = create_app({**env, "DATABASE_URL": "postgresql://nobody:x@127.0.0.1:1/none"})
    response = down.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["status"] == "unavailable"
    assert down.test_client().get("/healthz").status_code == 200
    assert down.test_client().get("/").status_code == 503


@pytest.mark.parametrize(
    "env_change",
    [{"SECRET_KEY": ""}, {"SECRET_KEY": "change-me"}, {"SECRET_KEY": "x"}, {"DATABASE_URL": ""}],
)
def test_production_refuses_to_start_without_real_secrets(env, env_change):
    production = {**env, "APP_ENV": "production", "SECRET_KEY": "k" * 40, **env_change}
    with pytest.raises(ConfigError):
        create_app(production)


def test_migrations_go_down_and_up_again(app):
    with app.app_context():
        downgrade(revision="base")
        assert "entries" not in inspect(db.engine).get_table_names()
        upgrade()
        assert "entries" in inspect(db.engine).get_table_names()


def test_these_tests_ran_the_versions_the_lock_file_ships():
    lock = (Path(__file__).parent.parent / "requirements.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", lock, re.MULTILINE))
    assert pins, "no pins in the lock file"
    assert {name: metadata.version(name) for name in pins} == pins


def test_an_empty_setting_means_its_default(env):
    """Compose passes every setting, empty where .env leaves it empty (docs/app-contract.md)."""
    app = create_app({**env, "APP_ENV": "", "SECRET_KEY": "k" * 40, "LOG_LEVEL": ""})
    assert app.config["APP_ENV"] == "production" and app.config["LOG_LEVEL"] == "INFO"
