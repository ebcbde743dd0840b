"""The text rules shared by forms and the API."""

from __future__ import annotations

import pytest

from app.validation import InvalidTextError, clean_text


def test_text_is_stripped():
    assert clean_text("  hello \n", "title", 10) == "hello"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "must be a string"),
        (3, "must be a string"),
        ("", "is required"),
        ("   ", "is required"),
        ("x" * 11, "at most 10 characters"),
        ("a\x00b", "invalid characters"),
        ("bad \ufffd decode", "invalid characters"),
        ("lone \ud800 surrogate", "invalid characters"),
    ],
)
def test_bad_text_is_refused_with_a_message_for_people(value, message):
    with pytest.raises(InvalidTextError, match=message):
        clean_text(value, "title", 10)


def test_optional_text_may_be_empty():
    assert clean_text("", "note", 10, required=False) == ""


def test_unicode_text_is_welcome():
    assert clean_text("Grüße, 世界 🌍", "title", 20) == "Grüße, 世界 🌍"
