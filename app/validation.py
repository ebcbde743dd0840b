"""Text checks shared by forms and the API: what Postgres can store and people can read."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import abort, request


class InvalidTextError(ValueError):
    pass


def clean_text(value: object, field: str, max_length: int, required: bool = True) -> str:
    """Return the stripped text or raise InvalidTextError with a message meant for the user.

    Undecodable bytes arrive as U+FFFD (Werkzeug decodes with `replace`) and JSON may carry
    lone surrogates or NUL, which Postgres refuses: all are rejected here, not at the database.
    """
    if not isinstance(value, str):
        raise InvalidTextError(f"{field} must be a string.")
    invalid = f"{field} contains invalid characters (it must be valid UTF-8 text)."
    if "\x00" in value or "\ufffd" in value:
        raise InvalidTextError(invalid)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTextError(invalid) from None
    value = value.strip()
    if required and not value:
        raise InvalidTextError(f"{field} is required.")
    if len(value) > max_length:
        raise InvalidTextError(f"{field} must be at most {max_length} characters.")
    return value


def check_form_encoding() -> None:
    """before_request hook: refuse urlencoded bodies that are not valid UTF-8.

    Werkzeug keeps undecodable %-escapes as literal text instead of failing, which would store
    "%FF" where the user sent garbage; checking the raw body tells the client instead.
    The body stays cached, so form parsing afterwards reads the same bytes.
    """
    if request.mimetype != "application/x-www-form-urlencoded":
        return
    raw = request.get_data(cache=True)
    try:
        for pair in raw.split(b"&"):
            unquote_to_bytes(pair.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        abort(400, description="The form contains text that is not valid UTF-8.")
