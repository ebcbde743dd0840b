"""Fixtures of the hostile-input corpus: hostile and broken requests against the deployed edge,
which must never get a 5xx, a leak or a hang.

The corpus is split by what it attacks (size and time limits, the edge's protocol handling,
sessions and other users' data, form and API input); its modules share one ledger, so that
test_hostile_survival.py, which runs last (tools/run-e2e.sh lists it last; it also sorts last),
checks the app's log over the whole corpus and prints one table of every case.

Auth endpoints are rate-limited (nginx: 10/min with a burst of 5, the app: 10/min, 50/h per
client address): the corpus registers two users for all its modules and sends only a handful of
other auth POSTs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import pytest
import requests

from support.forms import auth_post, submit
from support.https import https_client
from support.ledger import Ledger
from support.raw_http import ANSWER_TIMEOUT


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture(scope="session")
def new_browser(sandbox) -> Callable[[], requests.Session]:
    """Makes a fresh HTTPS client with no cookies, as a new visitor (or an attacker) has."""
    return lambda: https_client(sandbox.ca_cert, "flaskstack-e2e-hostile")


@pytest.fixture(scope="session")
def users(sandbox, new_browser) -> dict[str, dict]:
    """Two registered users, each with a logged-in browser, an API token and one post."""
    made = {}
    for role in ("alice", "mallory"):
        name = f"hostile-{role}-" + secrets.token_hex(3)
        password = secrets.token_urlsafe(16)
        browser = new_browser()
        registered = auth_post(
            lambda b=browser, n=name, p=password: submit(
                b,
                f"{sandbox.url}/register",
                username=n,
                email=f"{n}@example.org",
                password=p,
                confirm=p,
            )
        )
        assert registered.status_code == 200, registered.text[:300]
        # The token page is a signed-in form, not the rate-limited /api/v1/tokens.
        issued = submit(browser, f"{sandbox.url}/settings/token")
        token = re.search(r"fst_[A-Za-z0-9_-]+", issued.text).group(0)
        api = {"Authorization": f"Bearer {token}"}
        created = browser.post(
            f"{sandbox.url}/api/v1/posts",
            json={"title": f"{role}'s post", "body": "Original."},
            headers=api,
            timeout=ANSWER_TIMEOUT,
        )
        assert created.status_code == 201, created.text
        made[role] = {
            "name": name,
            "password": password,
            "browser": browser,
            "api": api,
            "post": created.json(),
        }
    return made
