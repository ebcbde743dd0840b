"""The peer edge (issue 19): Caddy 2 with the bench's certificates, release and gunicorn,
configured from Caddyfile.template. The security headers come from nginx's own snippet, so
both edges send the same ones."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import urllib3

from tools.bench.layout import APP_SOCKET, BENCH_DIR, CERT_NAME, REPO, SITE_HOST
from tools.bench.nginx_config import fill
from tools.bench.processes import BenchError, run, stop
from tools.servers import wait_for_port

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
# One port per certificate type: the handshake figures ask for one type at a time.
PORTS = {"ecdsa": 8443, "rsa": 8444}
# Headers both edges must send alike (Server, Date, Alt-Svc and the app's request id differ).
SHARED_HEADERS = (
    "Strict-Transport-Security", "Content-Security-Policy", "X-Frame-Options",
    "X-Content-Type-Options", "Referrer-Policy", "Cache-Control",
)  # fmt: skip


def security_headers() -> str:
    """nginx/snippets/security-headers.conf as Caddy `header` lines. HSTS is nginx's map of
    HSTS_POLICY (nginx/defaults.env); Alt-Svc is left to Caddy, which announces its HTTP/3."""
    hsts = re.search(r'^HSTS_POLICY="([^"]*)"', (REPO / "nginx/defaults.env").read_text(), re.M)
    snippet = (REPO / "nginx/snippets/security-headers.conf").read_text()
    lines = []
    for name, value in re.findall(r"^add_header\s+(\S+)\s+(.+?)\s+always;", snippet, re.M):
        value = value.strip('"')
        if value == "$flaskstack_hsts":
            value = hsts[1]
        elif value.startswith("$"):
            continue
        lines.append(f'\t\t{name} "{value}"')
    return "\n".join(lines)


def write_config(root: Path, certs: Path, static_root: Path, logs: Path, work: Path) -> Path:
    root.mkdir(parents=True)
    values = {
        "ERROR_LOG": str(logs / "caddy-error.log"),
        "SECURITY_HEADERS": security_headers(),
        "STATIC_ROOT": str(static_root),
        "APP_SOCKET": str(work / APP_SOCKET),
        "SITE_HOST": SITE_HOST,
        "ECDSA_PORT": str(PORTS["ecdsa"]),
        "RSA_PORT": str(PORTS["rsa"]),
        "ECDSA_LINEAGE": str(certs / "live" / f"{CERT_NAME}-ecdsa"),
        "RSA_LINEAGE": str(certs / "live" / f"{CERT_NAME}-rsa"),
    }
    config = root / "Caddyfile"
    config.write_text(fill((BENCH_DIR / "Caddyfile.template").read_text(), values))
    return config


@contextlib.contextmanager
def caddy(config: Path) -> Iterator[subprocess.Popen]:
    """Caddy running `config`; its state (none is needed) kept out of the caller's home."""
    env = {**os.environ, "XDG_DATA_HOME": str(config.parent), "XDG_CONFIG_HOME": str(config.parent)}
    run(CADDY, "validate", "--config", config, "--adapter", "caddyfile", capture_output=True,
        env=env)  # fmt: skip
    process = subprocess.Popen(
        [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(config.parent / "caddy.out").open("ab"),
    )
    try:
        for port in PORTS.values():
            wait_for_port(port, process)
        yield process
    finally:
        stop(process)


def check_same_answers(ca_cert: Path, static_path: str) -> None:
    """Before any figure: Caddy answers what nginx answers (status, body, encoding of the
    static file, security headers), so the two edges are compared doing the same work."""
    answers = {}
    for edge, port in (("nginx", 443), ("caddy", PORTS["ecdsa"])):
        pool = urllib3.HTTPSConnectionPool(
            "127.0.0.1", port, server_hostname=SITE_HOST, assert_hostname=SITE_HOST,
            ca_certs=str(ca_cert),
        )  # fmt: skip
        host = {"Host": SITE_HOST if port == 443 else f"{SITE_HOST}:{port}"}
        for path, headers in (
            ("/__bench/ceiling", {}),
            ("/", {"Cookie": "bench=uncached"}),
            (static_path, {"Accept-Encoding": "gzip, deflate, br"}),
        ):
            answer = pool.request("GET", path, headers={**host, **headers}, decode_content=True)
            answers[edge, path] = (
                answer.status,
                answer.data,
                answer.headers.get("Content-Encoding") if path == static_path else None,
                {name: answer.headers.get(name) for name in SHARED_HEADERS},
                # Caddy names the charset of text types; nginx (no `charset` set) does not.
                answer.headers.get("Content-Type", "").split(";")[0],
            )
        pool.close()
    fields = ("status", "body", "content-encoding", "headers", "media type")
    different = {
        (path, field): (nginx_value, caddy_value)
        for (edge, path), answer in answers.items()
        if edge == "nginx"
        for field, nginx_value, caddy_value in zip(
            fields, answer, answers["caddy", path], strict=True
        )
        if nginx_value != caddy_value
    }
    if different:
        raise BenchError(f"Caddy and nginx answer differently: {different}")
