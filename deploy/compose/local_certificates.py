"""Certificates for running the Compose stack without a public domain (TLS_MODE=local).

Creates a local CA once (kept in the certificates volume, /etc/letsencrypt/local-ca/) and issues
an ECDSA P-256 and an RSA 2048 certificate for SITE_HOST and SITE_ALIASES into the lineages nginx
reads (/etc/letsencrypt/live/${TLS_CERT_NAME}-{ecdsa,rsa}/), the same paths certbot fills with
ACME. Re-running re-issues only certificates that expire within 30 days or whose names changed.
Import local-ca/root.pem into a browser or system store to trust https://localhost; the CA key
never leaves the volume.

Runs in the certbot image (Dockerfile target "certbot"), whose certbot brings `cryptography`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path("/etc/letsencrypt")
CA_DIR = ROOT / "local-ca"
CERT_DAYS = 90
RENEW_BEFORE_DAYS = 30
CA_DAYS = 3650
# A CA that signs certificates (and CRLs) and nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_or_create_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = CA_DIR / "root.pem", CA_DIR / "root.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flaskstack local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(minutes=5))
        .not_valid_after(now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    print(f"created the local CA {cert_path}")
    return cert, key


def san_entries(names: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def needs_issue(cert_path: Path, names: list[str]) -> bool:
    if not cert_path.exists():
        return True
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - now() < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return True
    current = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(current) != set(san_entries(names))


def issue(lineage: Path, key, names: list[str], ca_cert, ca_key) -> None:
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(minutes=5))
        .not_valid_after(now() + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    # Key first: nginx reloads when fullchain.pem changes, and must then find the matching key.
    write_private(lineage / "privkey.pem", pem_key(key))
    (lineage / "fullchain.pem").write_bytes(chain)
    print(f"issued {lineage.name} for {' '.join(names)}, valid {CERT_DAYS} days")


def main() -> int:
    site_host = os.environ.get("SITE_HOST", "").strip()
    cert_name = os.environ.get("TLS_CERT_NAME", "").strip()
    if not site_host or not cert_name:
        print("SITE_HOST and TLS_CERT_NAME must be set", file=sys.stderr)
        return 2
    names = [site_host, *os.environ.get("SITE_ALIASES", "").split()]
    ca_cert, ca_key = load_or_create_ca()
    key_makers = {
        "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    for key_type, make_key in key_makers.items():
        lineage = ROOT / "live" / f"{cert_name}-{key_type}"
        if needs_issue(lineage / "fullchain.pem", names):
            issue(lineage, make_key(), names, ca_cert, ca_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
