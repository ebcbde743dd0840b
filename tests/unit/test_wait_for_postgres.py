"""deploy/wait-for-services.py with a DATABASE_URL that names a cluster's servers: ready once one
of them takes a session as the URL asks (read-write for the stack's), not once one answers."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "wait_for_services", REPO / "deploy/wait-for-services.py"
)
wait = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wait)

CLUSTER_URL = (
    "postgresql://flaskstack:pw@10.0.0.21:5432,10.0.0.22:6432,10.0.0.23/flaskstack"
    "?target_session_attrs=read-write"
)


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        (CLUSTER_URL, [("10.0.0.21", 5432), ("10.0.0.22", 6432), ("10.0.0.23", 5432)]),
        ("postgres://u@[2001:db8::1]:5433,db2/app", [("2001:db8::1", 5433), ("db2", 5432)]),
        # libpq's query form, as roles/app writes a cluster's URL; one port for all, or none.
        (
            "postgresql://u:p@/app?host=10.0.0.21,10.0.0.22&port=5432,6432&sslmode=verify-full",
            [("10.0.0.21", 5432), ("10.0.0.22", 6432)],
        ),
        ("postgresql://u:p@/app?host=db1,db2&port=6432", [("db1", 6432), ("db2", 6432)]),
        ("postgresql://u:p@/app?host=2001:db8::1,db2", [("2001:db8::1", 5432), ("db2", 5432)]),
        ("postgresql://u:p@db:5432/app", []),  # one server: its port is all that is checked
        ("", []),
    ],
)
def test_the_servers_of_a_multi_host_url(url, servers):
    assert wait.database_hosts(url) == servers


def test_a_cluster_url_is_not_taken_for_one_server(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", CLUSTER_URL)
    monkeypatch.setenv("REDIS_URL", "redis://:pw@cache:6379/0")
    assert wait.endpoints() == {"REDIS_URL": ("cache", 6379)}
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/app")
    assert wait.endpoints()["DATABASE_URL"] == ("db", 5432)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_libpq_decides_whether_a_server_takes_the_session():
    """With psycopg2 (the app's image has it), libpq tries every server as the app will."""
    first, second = closed_port(), closed_port()
    url = (
        f"postgresql://u:p@127.0.0.1:{first},127.0.0.1:{second}/app?target_session_attrs=read-write"
    )
    problem = wait.primary_problem(url)
    assert f"port {first} failed: Connection refused" in problem
    assert f"port {second} failed: Connection refused" in problem


def test_without_a_driver_any_server_accepting_connections_will_do(monkeypatch):
    def no_driver(name):
        raise ImportError(name)

    monkeypatch.setattr(wait.importlib, "import_module", no_driver)
    refusing = closed_port()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        url = f"postgresql://u:p@127.0.0.1:{refusing},127.0.0.1:{port}/app"
        assert wait.primary_problem(url) is None
    problem = wait.primary_problem(f"postgresql://u:p@127.0.0.1:{refusing},127.0.0.1:{port}/app")
    assert problem.startswith(f"127.0.0.1:{refusing}: ") and f"; 127.0.0.1:{port}: " in problem
