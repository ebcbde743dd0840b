"""HTTP/1.1 over TLS byte for byte: requests as an attacker would send them, answers parsed.

Python's HTTP clients normalise paths, refuse bad headers and fix framing; these helpers send
exactly the bytes they are given (ALPN http/1.1) and split what comes back into responses.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl

import pytest

# How long a server may take to answer or close before the case counts as a hang.
ANSWER_TIMEOUT = 15


class Response:
    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        found = [v for k, v in self.headers if k.lower() == wanted]
        return found[0].decode("latin-1") if found else None

    @property
    def raw_head(self) -> bytes:
        return b"\r\n".join(k + b": " + v for k, v in self.headers)


def parse_responses(stream: bytes) -> list[Response]:
    """Split a byte stream into the HTTP/1.1 responses it holds (Content-Length or chunked)."""
    responses = []
    while stream:
        head, sep, rest = stream.partition(b"\r\n\r\n")
        assert sep, f"a truncated response: {stream[:300]!r}"
        status_line, *lines = head.split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) ?(.*)", status_line)
        assert match, f"not an HTTP response: {stream[:300]!r}"
        headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines]
        response = Response(int(match.group(1)), match.group(2), headers, b"")
        if response.header("Transfer-Encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
        else:
            size = int(response.header("Content-Length") or 0)
            body, rest = rest[:size], rest[size:]
        response.body = body
        responses.append(response)
        stream = rest
    return responses


def tls_context(sandbox) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=sandbox.ca_cert)
    context.set_alpn_protocols(["http/1.1"])
    return context


def open_tls(sandbox, timeout: float = ANSWER_TIMEOUT) -> ssl.SSLSocket:
    raw = socket.create_connection((sandbox.edge["ip"], 443), timeout=timeout)
    return tls_context(sandbox).wrap_socket(raw, server_hostname=sandbox.domain)


def read_until_closed(tls: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection (or our timeout ends)."""
    data = b""
    with contextlib.suppress(ssl.SSLEOFError, ConnectionResetError):
        while chunk := tls.recv(65536):
            data += chunk
    return data


def exchange(sandbox, payload: bytes) -> list[Response]:
    """Send bytes as they are over one TLS connection; return the responses until it closes.

    A server that neither answers nor closes within ANSWER_TIMEOUT fails the case (a hang).
    """
    with open_tls(sandbox) as tls:
        tls.sendall(payload)
        try:
            return parse_responses(read_until_closed(tls))
        except TimeoutError:
            pytest.fail(f"no answer and no close within {ANSWER_TIMEOUT} s: {payload[:120]!r}")


def request_bytes(
    target: bytes | str,
    headers: list[bytes | str] = (),
    body: bytes = b"",
    method: str = "GET",
    host: str | None = "site",
    sandbox=None,
) -> bytes:
    """An HTTP/1.1 request, byte for byte; host="site" means the site's own name."""
    lines = [f"{method} ".encode() + _b(target) + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + (sandbox.domain if host == "site" else host).encode())
    lines += [_b(h) for h in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
