"""flaskstack: a small multi-user blog, built by the application factory `create_app`."""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping
from pathlib import Path

import msgspec
from dotenv import load_dotenv
from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from sqlalchemy.exc import DBAPIError
from werkzeug.middleware.proxy_fix import ProxyFix

from app import primary_change, sessions, templating
from app.config import ConfigError, load_settings
from app.extensions import (
    READ_ONLY_METHODS,
    csrf,
    db,
    init_read_only_engine,
    limiter,
    login_manager,
    make_redis,
    migrate,
)
from app.validation import check_form_encoding

__all__ = ["ConfigError", "create_app"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
log = logging.getLogger(__name__)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON answers (a view's dict or list), encoded by msgspec, which Flask-Session
    brings: the same documents, compact with sorted keys, in a fraction of the standard
    library's time (encoding was the largest part of an API list's own cost in a profile).
    Characters outside ASCII go out as UTF-8 instead of \\u escapes, the same JSON. Views
    return JSON's own types and format dates themselves (`models.post_dict`): msgspec would
    write a datetime in ISO 8601, not in Flask's HTTP-date form. Debug mode keeps Flask's
    indented output; `dumps` and `loads` stay the standard library's."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self._encoder = msgspec.json.Encoder(enc_hook=self.default, order="sorted")

    def response(self, *args, **kwargs) -> Response:
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)
        document = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(
            self._encoder.encode(document) + b"\n", mimetype=self.mimetype
        )


class FlaskStack(Flask):
    """Flask, running a view again when its database work failed in a way that another run
    mends (app/primary_change.py): a pooled connection turned out dead (Postgres restarted or
    went away, or the primary changed, and nothing told the pool), or for a moment no server
    accepts writes (a switchover). Nothing was committed, so another run is safe for a POST as
    for a GET; the session is rolled back first, and the pool was renewed. The runs wait for a
    primary with backoff, bounded by PRIMARY_CHANGE_WAIT_S; an outage (no server answers)
    still gets its 503 at once."""

    json_provider_class = JSONProvider

    def dispatch_request(self):
        with primary_change.request_budget():
            attempt = 0
            while True:
                try:
                    return super().dispatch_request()
                except DBAPIError as exc:
                    delay = primary_change.rerun_delay(exc, attempt)
                    if delay is None:
                        raise
                    log.warning(
                        "database: %s; running the view again%s",
                        " ".join(str(exc.orig).split()),
                        f" in {delay:.2f} s" if delay else "",
                    )
                    db.session.rollback()
                    time.sleep(delay)
                    attempt += 1


class RequestIdFilter(logging.Filter):
    """Stamp every log record with the current request's id ("-" outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import has_request_context

        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    handler.addFilter(RequestIdFilter())
    handler.set_name("flaskstack")
    root = logging.getLogger()
    # Replace rather than add, so building several apps in one process logs each line once.
    for old in [h for h in root.handlers if h.get_name() == "flaskstack"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def create_app(config: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment, or from `config` (an environment-like mapping).

    Without `config`, `.env` in the working directory is loaded first (never overriding
    variables already set), which is how development and the systemd units configure it.
    """
    if config is None:
        load_dotenv(Path.cwd() / ".env")
    settings = load_settings(config)

    app = FlaskStack(__name__)
    app.config.from_mapping(settings)
    configure_logging(app.config["LOG_LEVEL"])

    # nginx appends the client address to X-Forwarded-For; trust exactly that one hop.
    # gunicorn handles X-Forwarded-Proto itself (forwarded_allow_ips).
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=0, x_host=0)  # type: ignore[method-assign]

    @app.before_request
    def assign_request_id() -> None:
        # First of all before_request hooks, so even CSRF and rate-limit logs carry the id.
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else secrets.token_hex(8)
        # GET and HEAD read through the read-only engine (app/extensions.py: Session).
        g.db_read_only = request.method in READ_ONLY_METHODS

    app.before_request(check_form_encoding)

    app.extensions["redis"] = make_redis(app.config["REDIS_URL"])
    sessions.init_app(app)

    db.init_app(app)
    init_read_only_engine(app)
    primary_change.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."

    from app import admin, api, auth, cli, errors, health, main
    from app.assets import asset_url

    app.register_blueprint(health.bp)
    app.register_blueprint(main.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api.bp)
    errors.register(app)
    cli.register(app)
    app.jinja_env.globals["asset_url"] = asset_url
    templating.init_app(app)

    hostname = socket.gethostname()

    @app.after_request
    def add_response_headers(response):
        response.headers["X-Request-ID"] = g.get("request_id", "-")
        if app.config["APP_HOST_HEADER"]:
            response.headers["X-Served-By"] = hostname
        return response

    app.logger.debug("app created (APP_ENV=%s, pid %s)", app.config["APP_ENV"], os.getpid())
    return app
