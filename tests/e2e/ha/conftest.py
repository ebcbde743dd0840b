"""Fixtures of the high-availability stage: the Patroni cluster and the Redis Sentinels as their
own tools report them, asked on a data host."""

from __future__ import annotations

import json
import shlex
import time

import pytest
import yaml

PATRONICTL = "sudo -u postgres patronictl -c /etc/patroni/config.yml"


class Cluster:
    """The data hosts' Patroni cluster and Sentinels, as seen from one live data host."""

    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox
        self.data_hosts = sandbox.hosts_in("db")
        assert len(self.data_hosts) >= 3, "the HA stage needs three db hosts"

    def host(self, name: str) -> dict:
        return next(h for h in self.sandbox.spec["hosts"] if h["name"] == name)

    def ask(self, command: str, avoid: tuple[str, ...] = (), check: bool = True):
        """Run a command on the first data host not in `avoid` (one that is down or cut off)."""
        host = next(h for h in self.data_hosts if h["name"] not in avoid)
        return self.sandbox.ssh(host, command, check=check, timeout=60)

    def members(self, avoid: tuple[str, ...] = ()) -> list[dict]:
        result = self.ask(f"{PATRONICTL} list --format json", avoid)
        return json.loads(result.stdout)

    def settings(self) -> dict:
        """The cluster-wide settings Patroni keeps in etcd."""
        return yaml.safe_load(self.ask(f"{PATRONICTL} show-config").stdout)

    def leader(self, avoid: tuple[str, ...] = ()) -> str | None:
        leaders = [m["Member"] for m in self.members(avoid) if m["Role"] == "Leader"]
        return leaders[0] if leaders else None

    def wait_for_members(self, count: int, seconds: float = 120, avoid: tuple[str, ...] = ()):
        """Until a leader runs and `count` members stream from it with no lag."""
        deadline = time.monotonic() + seconds
        members: list[dict] = []
        while time.monotonic() < deadline:
            try:
                members = self.members(avoid)
            except Exception:  # noqa: BLE001 - a host may still be booting
                members = []
            leaders = [m for m in members if m["Role"] == "Leader" and m["State"] == "running"]
            streaming = [
                m for m in members if m["State"] == "streaming" and m.get("Lag in MB", 0) == 0
            ]
            if len(leaders) == 1 and len(streaming) == count - 1:
                return members
            time.sleep(2)
        pytest.fail(f"the cluster did not come back to {count} healthy members: {members}")

    def psql(self, host_name: str, sql: str) -> str:
        command = f"sudo -u postgres psql -X -A -t -d postgres -c {shlex.quote(sql)}"
        return self.sandbox.ssh(self.host(host_name), command, timeout=60).stdout.strip()

    def redis_master(self, avoid: tuple[str, ...] = ()) -> str:
        """The master's address, as the Sentinel of a data host says."""
        command = (
            'sudo sh -c \'REDISCLI_AUTH=$(sed -n "s/^sentinel auth-pass [^ ]* //p" '
            "/etc/redis/sentinel-flaskstack.conf) redis-cli --no-auth-warning --user sentinel "
            "-p 26379 --json SENTINEL GET-MASTER-ADDR-BY-NAME flaskstack'"
        )
        return json.loads(self.ask(command, avoid).stdout)[0]

    def redis_role(self, host: dict) -> list:
        """ROLE, asked of the Redis server on `host` as the Sentinels' user."""
        command = (
            'sudo sh -c \'REDISCLI_AUTH=$(sed -n "s/^sentinel auth-pass [^ ]* //p" '
            "/etc/redis/sentinel-flaskstack.conf) redis-cli --no-auth-warning --user sentinel "
            "--json ROLE'"
        )
        return json.loads(self.sandbox.ssh(host, command, timeout=60).stdout)

    def wait_for_redis_replicas(self, seconds: float = 90) -> None:
        """Until the master has a replica on every other data host (a host back from a power
        cut included: its Redis must start again, and follow the master)."""
        deadline = time.monotonic() + seconds
        replicas: set[str] = set()
        while time.monotonic() < deadline:
            try:
                master = self.host_at(self.redis_master())
                kind, _offset, listed = self.redis_role(master)
                replicas = {replica[0] for replica in listed} if kind == "master" else set()
            except Exception:  # noqa: BLE001 - a host may still be booting
                master, replicas = None, set()
            missing = [h for h in self.data_hosts if h is not master and h["ip"] not in replicas]
            if master is not None and not missing:
                return
            time.sleep(2)
        states = {
            h["name"]: self.sandbox.ssh(h, "systemctl is-active redis-server; sudo journalctl "
                                           "-u redis-server -n 5 --no-pager", check=False).stdout
            for h in self.data_hosts
        }  # fmt: skip
        pytest.fail(f"Redis has no replica on every other data host: {replicas}; {states}")

    def host_at(self, address: str) -> dict:
        return next(h for h in self.sandbox.spec["hosts"] if h["ip"] == address)


@pytest.fixture(scope="session")
def cluster(sandbox) -> Cluster:
    return Cluster(sandbox)
