"""Error responses: an HTML page for browsers, JSON `{"message": ...}` under /api.

Postgres or Redis being unreachable is an outage, not a bug: it answers 503 quickly (the
clients have short timeouts) and the next request after they return succeeds again.
"""

from __future__ import annotations

import contextlib
import logging

import redis
import sqlalchemy.exc
from flask import Flask, current_app, g, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge

from app.extensions import db

log = logging.getLogger(__name__)

# Errors that mean "a backing service is unavailable right now".
SERVICE_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)

UNAVAILABLE_MESSAGE = "The service is temporarily unavailable. Please try again in a moment."


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.blueprint == "health"


def error_response(status: int, message: str, title: str):
    if wants_json():
        return {"message": message}, status
    # Straight from the Jinja environment: Flask's render_template would run the context
    # processors, and Flask-Login's loads the current user from Postgres, maybe down.
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
        if isinstance(exc, SERVICE_ERRORS):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def register(app: Flask) -> None:
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
