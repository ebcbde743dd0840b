"""Fixtures of the multi-host stage (the member fixture is in tests/e2e/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def app_host_names(sandbox) -> set[str]:
    """The names the app hosts give in X-Served-By (their hostnames)."""
    names = set()
    for host in sandbox.hosts_in("app"):
        names.add(sandbox.ssh(host, "hostname").stdout.strip())
    assert len(names) >= 2, "the multi-host stage needs at least two app hosts"
    return names
