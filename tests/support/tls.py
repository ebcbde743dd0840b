"""The certificate a TLS server presents, as openssl sees it."""

from __future__ import annotations

import subprocess


def served_certificate(address: str, server_name: str, ca_cert: str, *openssl_args: str) -> str:
    """The text form (`openssl x509 -text -serial`) of the certificate served at address
    (host:port) for server_name, after a handshake that verified it against ca_cert."""
    handshake = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-servername", server_name,
         "-CAfile", ca_cert, *openssl_args],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Verify return code: 0 (ok)" in handshake.stdout, handshake.stdout[-2000:]
    decoded = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-serial"],
        input=handshake.stdout, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return decoded.stdout
