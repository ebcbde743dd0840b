"""Server-side sessions in Redis (Flask-Session) that turn a Redis outage into a 503.

Flask opens the session before any error handler can run, so a Redis error there would be a
bare 500. This interface records the error instead, hands Flask a null session, and the
first before_request hook re-raises it inside normal request handling, where it becomes a
503 like any other outage.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Request, Response, request, session
from flask_session.base import ServerSideSession
from flask_session.redis import RedisSessionInterface

from app.auth import epochs
from app.errors import SERVICE_ERRORS

ENVIRON_KEY = "flaskstack.session_error"
SESSIONLESS_BLUEPRINTS = frozenset({"health", "api"})


class ResilientRedisSessionInterface(RedisSessionInterface):
    def open_session(self, app: Flask, request: Request):
        try:
            return super().open_session(app, request)
        except SERVICE_ERRORS as exc:
            request.environ[ENVIRON_KEY] = exc
            return self.make_null_session(app)

    def _upsert_session(
        self, session_lifetime: timedelta, session: ServerSideSession, store_id: str
    ) -> None:
        # A session that holds an account is listed with it, so that ending the account's
        # sessions finds it (app/auth/epochs.py).
        data = self.serializer.encode(session)
        lifetime = int(session_lifetime.total_seconds())
        epochs.store(self.client, store_id, data, lifetime, session.get(epochs.SESSION_KEY))


def raise_session_error() -> None:
    error = request.environ.get(ENVIRON_KEY)
    # Health probes and the token-authenticated API never use the session.
    if error is not None and request.blueprint not in SESSIONLESS_BLUEPRINTS:
        raise error


def mark_personal_responses_private(response: Response) -> Response:
    """A response built from a session (a logged-in page, a flash message, a form with its CSRF
    token) or from credentials is for one person only: shared caches (nginx's microcache,
    nginx/snippets/microcache.conf) must never store it. An anonymous page leaves the session
    empty and unmodified, so it stays cacheable."""
    if session or session.modified or "Authorization" in request.headers:
        response.cache_control.private = True
    return response


def init_app(app: Flask) -> None:
    """Install the session interface; settings come from the SESSION_* config keys."""
    app.session_interface = ResilientRedisSessionInterface(
        app,
        client=app.extensions["redis"],
        key_prefix=app.config["SESSION_KEY_PREFIX"],
        permanent=app.config["SESSION_PERMANENT"],
        sid_length=32,
    )
    app.before_request(raise_session_error)
    app.after_request(mark_personal_responses_private)
