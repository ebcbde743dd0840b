"""guestbook: a second Flask app for the stack, unlike the blog where an app may differ.

A different package and factory (`guestbook:create_app()`), its own models and migrations
(Flask-Migrate's `flask db upgrade`), no worker, no server-side sessions (Flask's signed
cookie carries the CSRF token and flash messages), and static files under fixed names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from guestbook import health, views
from guestbook.config import ConfigError, load_settings
from guestbook.extensions import csrf, db, migrate

__all__ = ["ConfigError", "create_app"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    """Build the app from an environment mapping (os.environ by default): the stack's .env."""
    app = Flask(__name__)
    app.config.update(load_settings(env))
    logging.basicConfig(level=app.config["LOG_LEVEL"])
    # One proxy in front (the stack's nginx) sets the client address and the scheme.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    csrf.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(views.bp)
    views.register_error_pages(app)
    return app
