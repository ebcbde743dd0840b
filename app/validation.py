"""Text checks shared by forms and the API: what Postgres can store and people can read."""

from __future__ import annotations


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
