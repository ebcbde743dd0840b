"""Template helpers for the post lists, the busiest pages, and for the links on every page.

Jinja spends more per value than Python does: each call of a template global goes through
`context.call`, each attribute through `environment.getattr`, each output through `escape`. So
a list page gets its rows ready to print (`listed_posts`): links built and dates formatted in
one Python loop, and the template only prints them (figures: tools/bench/README.md, "Where it
stands").

Links: `url_for` builds a route's text through Werkzeug's routing each time. For a route with
one variable the URL is the same text around the value, so the text is built once per route (by
`url_for` itself: the routes stay the one source of truth) and filled in per row
(`url_builder`); a route without variables is the same text every time (`link`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import NamedTuple

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


@lru_cache(maxsize=256)
def _fixed_url(script_root: str, endpoint: str) -> str:
    return url_for(endpoint)


def url_builder(endpoint: str, name: str) -> Callable[[object], str]:
    """`lambda value: url_for(endpoint, name=value)` for an absolute endpoint
    ("blueprint.view") whose route has the one variable `name`, with the same result."""
    before, after = _around_value(request.script_root, endpoint, name)

    def build(value: object) -> str:
        text = str(value)
        if _UNRESERVED.fullmatch(text):
            return before + text + after
        return url_for(endpoint, **{name: value})

    return build


def link(endpoint: str, **values) -> str:
    """`url_for(endpoint, **values)` for an absolute endpoint and no or one route variable,
    with the same result."""
    if endpoint.startswith("."):
        return url_for(endpoint, **values)
    if not values:
        return _fixed_url(request.script_root, endpoint)
    ((name, value),) = values.items()
    return url_builder(endpoint, name)(value)


class ListedPost(NamedTuple):
    """A post in a list (a `PostSummary` row, app/queries.py) as the page prints it."""

    url: str
    title: str
    author_url: str
    author_name: str
    created_at: str  # ISO 8601 with the offset, for <time datetime>
    created_on: str  # YYYY-MM-DD
    body: str  # the start of the body; the template truncates it


def listed_posts(rows: Iterable) -> list[ListedPost]:
    """`PostSummary` rows as the list macro prints them (app/templates/_macros.html)."""
    post_url = url_builder("main.post", "post_id")
    author_url = url_builder("main.author", "username")
    listed = []
    for row in rows:
        created_at = row.created_at.isoformat()
        listed.append(
            ListedPost(
                post_url(row.id),
                row.title,
                author_url(row.author_name),
                row.author_name,
                created_at,
                # ISO 8601 starts with the date in the timestamp's own offset, as
                # strftime("%Y-%m-%d") gives it.
                created_at[:10],
                row.body,
            )
        )
    return listed


def init_app(app: Flask) -> None:
    app.jinja_env.globals["link"] = link
