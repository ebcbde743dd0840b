"""What an auditor checks on the hosts themselves: who may log in where, and how."""

from __future__ import annotations


def db_host(sandbox):
    return sandbox.hosts_in("db")[0]


def cache_host(sandbox):
    return sandbox.hosts_in("cache")[0]


def test_app_database_role_is_least_privileged(sandbox):
    query = "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'flaskstack'"
    result = sandbox.ssh(db_host(sandbox), f'sudo -u postgres psql -tAc "{query}"')
    assert result.stdout.strip() == "f|f|f"


def test_postgres_accepts_only_scram_passwords(sandbox):
    # A client that refuses SCRAM (insists on md5) must be turned away before any password check.
    result = sandbox.ssh(
        db_host(sandbox),
        "PGREQUIREAUTH=md5 PGPASSWORD=whatever psql -h 127.0.0.1 -U flaskstack -d flaskstack -c 1",
        check=False,
    )
    assert result.returncode != 0
    assert "SASL" in result.stderr or "scram" in result.stderr.lower(), result.stderr


def test_redis_refuses_unauthenticated_clients(sandbox):
    result = sandbox.ssh(cache_host(sandbox), "redis-cli -h 127.0.0.1 PING", check=False)
    assert "NOAUTH" in result.stdout + result.stderr


def test_ssh_refuses_root_and_passwords(sandbox):
    config = sandbox.ssh(sandbox.edge, "sudo sshd -T").stdout
    assert "permitrootlogin no" in config
    assert "passwordauthentication no" in config
