"""An HTTPS client like a user's browser, and the site's names resolved to the stack under test."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import requests


def https_client(ca_cert: str, agent: str) -> requests.Session:
    """An HTTPS client that trusts only the stack's ACME root, like a user's browser."""
    session = requests.Session()
    # Ignore the environment: REQUESTS_CA_BUNDLE would silently replace `verify`, and a proxy
    # setting would send the stack's traffic elsewhere.
    session.trust_env = False
    session.verify = ca_cert
    session.headers["User-Agent"] = agent
    return session


@contextlib.contextmanager
def names_resolved_to(names: set[str], host: str, https_port: int | None = None) -> Iterator[None]:
    """While open, this process resolves `names` to `host`, as `curl --resolve` does.

    With `https_port`, only their port 443 goes there, to that port (`curl --connect-to`): for a
    stack that publishes its 443 elsewhere.
    """
    real = socket.getaddrinfo

    def getaddrinfo(name, port, *args, **kwargs):
        if name in names:
            if https_port is None:
                return real(host, port, *args, **kwargs)
            if int(port or 443) == 443:
                return real(host, https_port, *args, **kwargs)
        return real(name, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = real
