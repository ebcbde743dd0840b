"""Postgres and Redis on the data host: reachable from the app hosts only.

They listen on the private network (the app hosts are elsewhere), and the data host's firewall
admits only the app hosts' addresses on 5432/6379. A connection attempt from anywhere else is
dropped: it never gets as far as a password prompt.
"""

from __future__ import annotations

import shlex

import pytest

from support.ports import accepting_ports

DATA_PORTS = {"postgres": 5432, "redis": 6379}


@pytest.fixture(scope="module")
def data_hosts(sandbox) -> list[dict]:
    hosts = {h["name"]: h for group in ("db", "cache") for h in sandbox.hosts_in(group)}
    assert hosts, "no db/cache host in this sandbox"
    assert not any("app" in h["groups"] or "edge" in h["groups"] for h in hosts.values()), (
        "the multi-host stage expects Postgres and Redis on hosts of their own"
    )
    return list(hosts.values())


def test_app_hosts_reach_postgres_and_redis(sandbox, data_hosts):
    for data in data_hosts:
        for app in sandbox.hosts_in("app"):
            ports = accepting_ports(sandbox, app, data["ip"], DATA_PORTS.values())
            assert ports == set(DATA_PORTS.values()), app


def test_edge_host_cannot_reach_postgres_or_redis(sandbox, data_hosts):
    for data in data_hosts:
        for edge in sandbox.hosts_in("edge"):
            assert accepting_ports(sandbox, edge, data["ip"], DATA_PORTS.values()) == set(), edge


def test_another_machine_cannot_reach_postgres_or_redis(sandbox, data_hosts):
    for data in data_hosts:
        assert accepting_ports(sandbox, None, data["ip"], DATA_PORTS.values()) == set()


def test_postgres_and_redis_listen_only_on_loopback_and_the_private_address(sandbox, data_hosts):
    for data in data_hosts:
        listening = sandbox.ssh(data, "sudo ss -Hltn").stdout
        for port in DATA_PORTS.values():
            addresses = {
                line.split()[3].rsplit(":", 1)[0]
                for line in listening.splitlines()
                if line.split()[3].endswith(f":{port}")
            }
            assert addresses and addresses <= {"127.0.0.1", "[::1]", data["ip"]}, (port, addresses)


def test_app_hosts_connect_to_postgres_over_tls_only(sandbox, data_hosts):
    db = sandbox.hosts_in("db")[0]
    query = (
        "SELECT a.client_addr, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        " WHERE a.usename = 'flaskstack' AND a.client_addr IS NOT NULL"
    )
    sessions = sandbox.ssh(db, f'sudo -u postgres psql -tAc "{query}"').stdout.split()
    app_ips = {h["ip"] for h in sandbox.hosts_in("app")}
    assert {line.split("|")[0] for line in sessions} == app_ips, sessions
    assert all(line.endswith("|t") for line in sessions), sessions
    # A client that refuses TLS is turned away before any password check (the release's own
    # Postgres driver, from an app host).
    connect = (
        "import psycopg2, sys;"
        "psycopg2.connect(host=sys.argv[1], sslmode='disable', dbname='flaskstack',"
        " user='flaskstack', password='not-the-password', connect_timeout=5)"
    )
    plain = sandbox.ssh(
        sandbox.hosts_in("app")[0],
        shlex.join(["/srv/flaskstack/current/.venv/bin/python", "-c", connect, db["ip"]]),
        check=False,
    )
    assert plain.returncode != 0
    # pg_hba turns it away ("rejects connection" / "no pg_hba.conf entry … no encryption").
    assert "pg_hba.conf" in plain.stderr and "no encryption" in plain.stderr, plain.stderr
