"""Template helpers for the post lists, the busiest pages.

A list page made two `url_for` calls per row, a large share of its time in cProfile (figures:
tools/bench/README.md, "Where it stands"), and Jinja calls methods such as `isoformat()` on each
row through its slower `context.call`.
`link()` is `url_for` for a route with one variable: the URL is the same text around the
value, so the text is built once per route (by `url_for` itself: the routes stay the one
source of truth) and filled in per row. The date filters are plain calls.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache

from flask import Flask, request, url_for

# Values made only of URL-unreserved characters are the same text in the URL (RFC 3986 §2.3);
# anything else goes through url_for, which quotes it.
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
# A number that stands for the value when building a route's text once; digits suit both the
# int and the default string converter.
_PLACEHOLDER = 7093146852


@lru_cache(maxsize=256)
def _around_value(script_root: str, endpoint: str, name: str) -> tuple[str, str]:
    url = url_for(endpoint, **{name: _PLACEHOLDER})
    before, found, after = url.partition(str(_PLACEHOLDER))
    if not found or str(_PLACEHOLDER) in after:
        raise ValueError(f"cannot build {endpoint} from its text")
    return before, after


def link(endpoint: str, **values) -> str:
    """`url_for(endpoint, name=value)` for an absolute endpoint ("blueprint.view") and one
    route variable, with the same result."""
    ((name, value),) = values.items()
    text = str(value)
    if endpoint.startswith(".") or not _UNRESERVED.fullmatch(text):
        return url_for(endpoint, **values)
    before, after = _around_value(request.script_root, endpoint, name)
    return before + text + after


def iso_datetime(value: datetime) -> str:
    return value.isoformat()


def iso_date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def init_app(app: Flask) -> None:
    app.jinja_env.globals["link"] = link
    app.jinja_env.filters["iso_datetime"] = iso_datetime
    app.jinja_env.filters["iso_date"] = iso_date
