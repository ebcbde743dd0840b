"""The site's forms as a browser uses them: the CSRF token, a posted form, a registration."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

import requests

# The session cookie in production (app/config.py): what the log-in form sets.
SESSION_COOKIE = "__Host-session"


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, "the form carries no CSRF token"
    return match.group(1)


def submit(browser: requests.Session, url: str, form_url: str | None = None, **fields):
    """Fetch the page holding the form, then post it with its CSRF token, as a browser would.

    Over HTTPS Flask-WTF also wants a same-origin Referer, which browsers send by default.
    """
    page = browser.get(form_url or url, timeout=15)
    assert page.status_code == 200, page.text[:500]
    data = {"csrf_token": csrf_token(page.text), **fields}
    return browser.post(url, data=data, headers={"Referer": page.url}, timeout=15)


def register(browser: requests.Session, site: str, prefix: str) -> tuple[str, str]:
    """Register a new user (prefix + a random suffix) through the form; the browser is then
    logged in. Returns the username and password."""
    username = prefix + secrets.token_hex(4)
    password = secrets.token_urlsafe(16)
    registered = submit(
        browser, f"{site}/register",
        username=username, email=f"{username}@example.org", password=password, confirm=password,
    )  # fmt: skip
    assert registered.status_code == 200, registered.text[:500]
    return username, password


def auth_post(send: Callable[[], requests.Response]) -> requests.Response:
    """An auth endpoint's answer, waiting out nginx's limit (one request per 6 s) when hit."""
    for _ in range(4):
        response = send()
        if response.status_code != 429:
            return response
        time.sleep(6.5)
    return response
