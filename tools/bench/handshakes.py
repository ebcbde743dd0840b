"""Figures 10: nginx's CPU time per new connection, one request each: a full or a resumed
TLS 1.3 handshake with an ECDSA or an RSA certificate, or no TLS at all. nginx is restarted for
each certificate, serving that one alone, so the client cannot choose. Then C10a and C10b: the
same full handshakes with Caddy."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

from tools.bench.caddy import PORTS as CADDY_PORTS
from tools.bench.caddy import caddy
from tools.bench.figures import (
    FIGURES,
    HANDSHAKE_ROUND,
    HANDSHAKES,
    PEER_HANDSHAKES,
    SPECS,
    Connections,
    Profile,
)
from tools.bench.layout import SITE_HOST
from tools.bench.processes import BenchError, cpu_seconds, log
from tools.bench.results import Figure, Results, Run
from tools.bench.stack import Stack, nginx, nginx_workers


class TlsClient:
    """New TLS 1.3 connections, one HTTP/1.1 request each, like a browser's first request.
    Resuming, each connection offers the session of the one before (a chain, so every offer
    is of a live session, as a returning browser's is)."""

    REQUEST = (
        f"GET /__bench/ceiling HTTP/1.1\r\nHost: {SITE_HOST}\r\nConnection: close\r\n\r\n".encode()
    )

    def __init__(self, ca_cert: Path, port: int = 443) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca_cert))
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.set_alpn_protocols(["http/1.1"])
        self.session = None

    def connect(self, resume: bool) -> bool:
        """One connection; returns whether it resumed a session."""
        with socket.create_connection(("127.0.0.1", self.port)) as raw:
            offered = self.session if resume else None
            with self.context.wrap_socket(raw, server_hostname=SITE_HOST, session=offered) as tls:
                fetch_fixed_200(tls)
                self.session = tls.session  # TLS 1.3 tickets come after the handshake: read first
                return tls.session_reused


def fetch_fixed_200(connection: socket.socket) -> None:
    """Send TlsClient's request on a connection and read the answer to its end (a 200)."""
    connection.sendall(TlsClient.REQUEST)
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"unexpected answer: {answer[:80]!r}")


def new_plain_connection() -> None:
    """The same request as TlsClient's without TLS (port 80, the same fixed 200)."""
    with socket.create_connection(("127.0.0.1", 80)) as plain:
        fetch_fixed_200(plain)


def kinds_by_certificate() -> dict[str, dict[str, bool | None]]:
    """From the table: for each certificate, its figures' keys → resume (None: no TLS)."""
    kinds: dict[str, dict[str, bool | None]] = {}
    for spec in FIGURES:
        if isinstance(spec.measures, Connections) and spec.measures.edge == "nginx":
            kinds.setdefault(spec.measures.certificate, {})[spec.key] = spec.measures.resume
    return kinds


def measure_handshakes(stack: Stack, results: Results, profile: Profile) -> None:
    """All of figures 10, `profile.handshakes` connections of each kind per repetition. The
    stack must be closed: this starts nginx again, once per certificate."""
    count = profile.handshakes
    for key in HANDSHAKES:
        results.add(SPECS[key].figure(connections=count, round=HANDSHAKE_ROUND))
    log(f"TLS handshakes: {count} new connections per run, nginx serving one certificate at a time")
    for certificate, kinds in kinds_by_certificate().items():
        config = stack.nginx_config(f"nginx-{certificate}")
        config.only_certificate(certificate)
        with nginx(config) as edge:
            client = TlsClient(stack.ca_cert)
            for _ in range(50):  # warm-up
                client.connect(resume=True)
            for repetition in range(1, profile.repetitions + 1):
                runs = measure_connections(edge, client, kinds, count)
                for key, run in runs.items():
                    results.figures[key].runs.append(run)
                    log(
                        f"  [{repetition}/{profile.repetitions}] {key}: "
                        f"{run.value:.3f} ms CPU/conn, "
                        f"{run.detail['resumed']}/{run.requests} resumed"
                    )
    note_tls_alone(results.figures)
    measure_peer_handshakes(stack, results, profile)


def measure_peer_handshakes(stack: Stack, results: Results, profile: Profile) -> None:
    """C10a, C10b: Caddy's CPU time (all its threads) per full handshake, ECDSA and RSA (one
    port each), in alternating rounds like nginx's."""
    count = profile.handshakes
    rounds = count // HANDSHAKE_ROUND
    for key in PEER_HANDSHAKES:
        results.add(SPECS[key].figure(connections=rounds * HANDSHAKE_ROUND))
    log(f"TLS handshakes with Caddy: {count} new connections per run and certificate type")
    with caddy(stack.caddy_config) as peer:
        clients = {
            key: TlsClient(stack.ca_cert, CADDY_PORTS[SPECS[key].measures.certificate])
            for key in PEER_HANDSHAKES
        }
        for client in clients.values():
            for _ in range(50):  # warm-up
                client.connect(resume=False)
        for repetition in range(1, profile.repetitions + 1):
            cpu = dict.fromkeys(clients, 0.0)
            resumed = dict.fromkeys(clients, 0)
            for _ in range(rounds):
                for key, client in clients.items():
                    before = cpu_seconds([peer.pid])
                    for _ in range(HANDSHAKE_ROUND):
                        resumed[key] += client.connect(resume=False)
                    cpu[key] += cpu_seconds([peer.pid]) - before
            for key in clients:
                connections = rounds * HANDSHAKE_ROUND
                run = Run(
                    value=cpu[key] * 1000 / connections,
                    requests=connections,
                    errors=resumed[key],  # a full handshake was asked for
                    detail={"cpu_s": cpu[key], "resumed": resumed[key]},
                )
                results.figures[key].runs.append(run)
                log(f"  [{repetition}/{profile.repetitions}] {key}: {run.value:.3f} ms CPU/conn")


def measure_connections(
    edge: subprocess.Popen, client: TlsClient, kinds: dict[str, bool | None], count: int
) -> dict[str, Run]:
    """`count` connections of each kind (full, resumed, or None: no TLS), alternating in
    rounds of HANDSHAKE_ROUND so that a busy moment of the machine hits every kind alike;
    nginx's workers' time on a CPU is summed per kind."""
    workers = nginx_workers(edge)
    cpu = dict.fromkeys(kinds, 0.0)
    resumed = dict.fromkeys(kinds, 0)
    started = time.monotonic()
    for _ in range(count // HANDSHAKE_ROUND):
        for key, resume in kinds.items():
            before = cpu_seconds(workers)
            for _ in range(HANDSHAKE_ROUND):
                if resume is None:
                    new_plain_connection()
                else:
                    resumed[key] += client.connect(resume)
            cpu[key] += cpu_seconds(workers) - before
    elapsed = time.monotonic() - started
    connections = count // HANDSHAKE_ROUND * HANDSHAKE_ROUND
    return {
        key: Run(
            value=cpu[key] * 1000 / connections,
            requests=connections,
            errors=connections - resumed[key] if resume else resumed[key],  # not as asked
            detail={
                "cpu_s": cpu[key],
                "connections_per_s": connections * len(kinds) / elapsed,
                "resumed": resumed[key],
            },
        )
        for key, resume in kinds.items()
    }


def note_tls_alone(figures: dict[str, Figure]) -> None:
    """What TLS itself costs: 10a-10d less the plain connection of 10e (the TCP accept
    and close, the request, the log line, which are in every figure of 10 alike)."""
    plain = figures["10e"].median
    tls = {key: figures[key].median - plain for key in ("10a", "10b", "10c", "10d")}
    if min(tls["10a"], tls["10b"]) <= 0:
        return
    figures["10c"].note = (
        "TLS alone (less 10e): ECDSA full "
        f"{tls['10a']:.3f}, resumed {tls['10c']:.3f} ms ({tls['10c'] / tls['10a']:.2f}×); "
        f"RSA full {tls['10b']:.3f}, resumed {tls['10d']:.3f} ms "
        f"({tls['10d'] / tls['10b']:.2f}×)"
    )
