"""Fixtures of the multi-host stage: one member of the site, logged in on the web and the API.

Every test request comes from one address, and login, registration and token creation share a
rate limit per address (app and nginx): the stage registers one member and makes one token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
import requests
from test_user_flows import submit


@dataclass
class Member:
    username: str
    web: requests.Session  # logged in through the site's forms (session cookie)
    api: requests.Session  # carries the member's API bearer token


def https_client(sandbox) -> requests.Session:
    client = requests.Session()
    client.trust_env = False  # see the browser fixture in tests/e2e/conftest.py
    client.verify = sandbox.ca_cert
    client.headers["User-Agent"] = "flaskstack-e2e-multi"
    return client


@pytest.fixture(scope="session")
def member(sandbox) -> Member:
    username = "multi-" + secrets.token_hex(4)
    password = secrets.token_urlsafe(16)
    web = https_client(sandbox)
    registered = submit(
        web, f"{sandbox.url}/register",
        username=username, email=f"{username}@example.org", password=password, confirm=password,
    )  # fmt: skip
    assert registered.status_code == 200, registered.text[:500]

    api = https_client(sandbox)
    token = api.post(f"{sandbox.url}/api/v1/tokens",
                     json={"username": username, "password": password}, timeout=15)  # fmt: skip
    assert token.status_code == 201, token.text
    api.headers["Authorization"] = f"Bearer {token.json()['token']}"
    return Member(username, web, api)


@pytest.fixture(scope="session")
def app_host_names(sandbox) -> set[str]:
    """The names the app hosts give in X-Served-By (their hostnames)."""
    names = set()
    for host in sandbox.hosts_in("app"):
        names.add(sandbox.ssh(host, "hostname").stdout.strip())
    assert len(names) >= 2, "the multi-host stage needs at least two app hosts"
    return names
