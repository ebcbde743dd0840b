"""Error responses: an HTML page for browsers, JSON `{"message": ...}` under /api.

Postgres or Redis being unreachable is an outage, not a bug: it answers 503 quickly (the
clients have short timeouts) and the next request after they return succeeds again. So is a
database without the app's tables (a replaced db host before its restore).
"""

from __future__ import annotations

import contextlib
import logging

import psycopg2.errors
import redis
import sqlalchemy.exc
from flask import Flask, current_app, g, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from app.extensions import db

log = logging.getLogger(__name__)

# Errors that mean "a backing service is unavailable right now". A Redis that refuses writes
# (full under noeviction, or a replica while a failover promotes another) is one too.
SERVICE_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)


def _schema_missing(exc: BaseException) -> bool:
    """A database without the app's tables: a new or replaced db host before its restore or
    migrations. An outage of the data, not a bug in the request."""
    return isinstance(exc, sqlalchemy.exc.ProgrammingError) and isinstance(
        exc.orig, psycopg2.errors.UndefinedTable
    )


UNAVAILABLE_MESSAGE = "The service is temporarily unavailable. Please try again in a moment."


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.blueprint == "health"


def error_response(status: int, message: str, title: str):
    if wants_json():
        return {"message": message}, status
    # Straight from the Jinja environment: Flask's render_template would run the context
    # processors, and Flask-Login's may load the current user from Redis, maybe down.
    page = current_app.jinja_env.get_template("error.html")
    return page.render(status=status, title=title, message=message), status


def _service_unavailable(exc: Exception):
    log.warning("backing service unavailable: %s: %s", type(exc).__name__, exc)
    # The connection may be gone already; the session is discarded at teardown either way.
    with contextlib.suppress(Exception):
        db.session.rollback()
    response = error_response(503, UNAVAILABLE_MESSAGE, "Service unavailable")
    return response[0], 503, {"Retry-After": "5"}


def _too_large_message() -> str:
    """Name the limit the request broke: the whole body, or one of the multipart form limits."""
    max_body = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is None or length > max_body or request.mimetype != "multipart/form-data":
        return f"The request is too large (the limit is {max_body // 1024} KiB)."
    # The body was within the limit, so Werkzeug's multipart parser refused a field or the count.
    field_kib = request.max_form_memory_size // 1024
    return (
        f"The form is too large: a field may hold at most {field_kib} KiB and a form "
        f"at most {request.max_form_parts} fields."
    )


def _find_service_error(exc: BaseException | None) -> Exception | None:
    """The service error behind `exc`, following causes (limits wraps Redis errors)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, SERVICE_ERRORS) or _schema_missing(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


# The most drain_unread_body reads; nginx's client_max_body_size (2m) stays far below it.
DRAIN_LIMIT = 16 * 1024 * 1024


def drain_unread_body(response):
    """Read what is left of the request body before the response goes out.

    A response may come before the body was read: a 413 over MAX_CONTENT_LENGTH, a 401 for a
    bad token, a form refused half way. gunicorn then closes the connection with the rest of
    the body unread, the kernel answers with a reset, and nginx, still sending the body it
    buffered, reports 502 to the client instead of this response.
    """
    length = request.content_length
    stream = request.environ.get("wsgi.input")
    if length and stream is not None and length <= DRAIN_LIMIT:
        with contextlib.suppress(OSError, ValueError):
            while stream.read(64 * 1024):
                pass
    return response


def close_db_session(exc: BaseException | None) -> None:
    """End the request's database session, throwing away a connection that died meanwhile.

    Flask-SQLAlchemy's own teardown (which runs after this one) closes the session by rolling
    back on its connection. If Postgres went away after the view's last query, that rollback
    raises outside every error handler, and gunicorn answers a bare 500 to a request that had
    its response ready. Invalidating discards the connection without talking to the server.
    """
    try:
        db.session.close()
    except sqlalchemy.exc.DBAPIError as error:
        log.warning("database connection lost at the end of the request: %s", error.orig)
        with contextlib.suppress(Exception):
            db.session.invalidate()


def register(app: Flask) -> None:
    # Registered after db.init_app (create_app), so it runs before Flask-SQLAlchemy's teardown.
    app.teardown_appcontext(close_db_session)
    app.after_request(drain_unread_body)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_response(exc.code or 500, exc.description or exc.name, exc.name)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge):
        return error_response(413, _too_large_message(), "Request too large")

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_response(
            400,
            f"{exc.description} Reload the page and submit the form again.",
            "Form expired or invalid",
        )

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        message = f"Too many attempts ({exc.description}). Please wait and try again."
        # Flask-Limiter adds Retry-After and the X-RateLimit-* headers itself.
        return error_response(429, message, "Too many requests")

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        service_error = _find_service_error(exc)
        if service_error is not None:
            return _service_unavailable(service_error)
        log.exception("unhandled error (request id %s)", g.get("request_id", "-"))
        return error_response(500, "Something went wrong on our side.", "Server error")

    @app.errorhandler(InternalServerError)
    def internal_error(exc: InternalServerError):
        # Reached for errors raised outside view dispatch, e.g. opening the session in Redis.
        service_error = _find_service_error(exc.original_exception)
        if service_error is not None:
            return _service_unavailable(service_error)
        return error_response(500, "Something went wrong on our side.", "Server error")
