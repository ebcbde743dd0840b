"""Fixtures for the end-to-end stage: a deployed sandbox, checked from outside as a user would.

The sandbox (tools/sandbox/sandbox.sh) describes itself in sandbox.json; these tests only read
that file and talk to the hosts over the network (HTTPS, SSH), never through Ansible internals.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from support.forms import register
from support.https import https_client, names_resolved_to
from support.tls import served_certificate

ROOT = Path(__file__).resolve().parents[2]
AGENT = "flaskstack-e2e"  # the User-Agent of the stage's HTTPS clients


def sandbox_file() -> Path:
    return Path(os.environ.get("SANDBOX_JSON", ROOT / ".sandbox" / "sandbox.json"))


class Sandbox:
    """What the sandbox says about itself, plus the ways a user or an operator reaches it."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.domain: str = spec["domain"]
        self.url: str = spec["url"].rstrip("/")
        self.ca_cert: str = spec["ca_cert"]
        self.hosts: list[dict] = spec["hosts"]
        self.sandbox_id = spec.get("sandbox_id", 0)

    def hosts_in(self, group: str) -> list[dict]:
        return [h for h in self.hosts if group in h["groups"]]

    @property
    def edge(self) -> dict:
        return self.hosts_in("edge")[0]

    @property
    def site_ip(self) -> str:
        """Where the site's names resolve: the edges' floating address, or the edge host."""
        return self.spec.get("site_ip") or self.edge["ip"]

    def primary_db_host(self) -> dict:
        """The db host whose Postgres takes writes: the one db host, or the Patroni primary."""
        db_hosts = self.hosts_in("db")
        if len(db_hosts) == 1:
            return db_hosts[0]
        ask = "sudo -u postgres psql -X -A -t -c 'SELECT pg_is_in_recovery()'"
        for host in db_hosts:
            if self.ssh(host, ask, check=False, timeout=30).stdout.strip() == "f":
                return host
        raise AssertionError("no db host runs a primary")

    def edges_holding_the_site_ip(self, avoid: tuple[str, ...] = ()) -> list[dict]:
        """The edges (but those in `avoid`: down or cut off) with the floating address now."""
        return [
            edge
            for edge in self.hosts_in("edge")
            if edge["name"] not in avoid
            and f" {self.site_ip}/" in self.ssh(edge, "ip -o -4 address show").stdout
        ]

    @property
    def probe_netns(self) -> str:
        return self.spec.get("probe_netns", f"fs{self.sandbox_id}-probe")

    def ssh_argv(self, host: dict, command: str) -> list[str]:
        """The ssh command line that runs a shell command on a host as the deploy user."""
        return [
            "ssh", "-i", self.spec["ssh_key"],
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            f"{self.spec['ssh_user']}@{host['ip']}", command,
        ]  # fmt: skip

    def ssh(self, host: dict, command: str, check: bool = True, timeout: int = 300):
        """Run a shell command on a host as the deploy user (commands use sudo themselves)."""
        argv = self.ssh_argv(host, command)
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)

    def nginx_log_lines(self, text: str, timeout: float = 10.0) -> str:
        """The edge's access log lines holding `text`, waiting for them: nginx writes its log
        buffered, up to a second late. Fails the test if none appears in time."""
        deadline = time.monotonic() + timeout
        while True:
            grep = f"sudo grep -F -- '{text}' /var/log/nginx/access.log"
            found = self.ssh(self.edge, grep, check=False)
            assert found.returncode in (0, 1), f"grep failed on the edge: {found.stderr}"
            lines = found.stdout
            if lines or time.monotonic() > deadline:
                assert lines, f"no line with {text!r} in nginx's access log after {timeout} s"
                return lines
            time.sleep(0.25)

    def journal(self, host: dict, unit: str, since: str) -> str:
        """A unit's journal on a host since a time (journalctl's --since: "-10min", "@1700000000").
        Fails the test if journalctl fails, so that an empty journal means one."""
        command = f"sudo journalctl -u {unit} --since {shlex.quote(since)} --no-pager"
        return self.ssh(host, command).stdout

    def served_certificate(self, *openssl_args: str) -> str:
        """The text form of the certificate the edge presents for the site's name."""
        address = f"{self.edge['ip']}:443"
        return served_certificate(address, self.domain, self.ca_cert, *openssl_args)

    def curl(self, *args: str, netns: str | None = None, check: bool = False):
        """curl with the site's name resolved to its address (site_ip), trusting the ACME CA."""
        argv = [
            "curl", "-sS", "--max-time", "15", "--cacert", self.ca_cert,
            "--resolve", f"{self.domain}:443:{self.site_ip}",
            "--resolve", f"{self.domain}:80:{self.site_ip}",
            "--resolve", f"www.{self.domain}:443:{self.site_ip}",
            "--resolve", f"www.{self.domain}:80:{self.site_ip}",
            *args,
        ]  # fmt: skip
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)

    def make(self, target: str, *variables: str, timeout: int = 900):
        """Run an ops target of the Makefile against this sandbox's inventory, as an operator
        would (`make switchover INVENTORY=…`); fails the test when it fails."""
        argv = ["make", "-C", str(ROOT), target, f"INVENTORY={self.spec['inventory']}", *variables]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"make {target} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def cli(self, *args: str, check: bool = True, timeout: int = 900):
        """Run tools/sandbox/sandbox.sh for this sandbox (restart a host, …)."""
        env = {**os.environ, "SANDBOX_ID": str(self.sandbox_id)}
        return subprocess.run(
            [str(ROOT / "tools" / "sandbox" / "sandbox.sh"), *args],
            capture_output=True, text=True, check=check, timeout=timeout, env=env,
        )  # fmt: skip


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    path = sandbox_file()
    if not path.exists():
        pytest.fail(f"no sandbox description at {path}: run `make demo` first")
    return Sandbox(json.loads(path.read_text()))


@pytest.fixture(scope="session", autouse=True)
def resolve_site_to_edge(sandbox: Sandbox):
    """The test-side equivalent of `curl --resolve`: the site's names go to its address."""
    with names_resolved_to({sandbox.domain, f"www.{sandbox.domain}"}, sandbox.site_ip):
        yield


@pytest.fixture
def browser(sandbox: Sandbox) -> requests.Session:
    """A fresh HTTPS client that trusts only the sandbox's ACME root, like a user's browser."""
    return https_client(sandbox.ca_cert, AGENT)


@dataclass
class Member:
    username: str
    web: requests.Session  # logged in through the site's forms (session cookie)
    api: requests.Session  # carries the member's API bearer token


@pytest.fixture(scope="session")
def member(sandbox: Sandbox) -> Member:
    """One member of the site for the whole stage, logged in on the web and on the API.

    Every test request comes from one address, and login, registration and token creation share
    a rate limit per address (app and nginx): the stage registers one member and makes one token.
    """
    web = https_client(sandbox.ca_cert, AGENT)
    username, password = register(web, sandbox.url, "member-")

    api = https_client(sandbox.ca_cert, AGENT)
    token = api.post(f"{sandbox.url}/api/v1/tokens",
                     json={"username": username, "password": password}, timeout=15)  # fmt: skip
    assert token.status_code == 201, token.text
    api.headers["Authorization"] = f"Bearer {token.json()['token']}"
    return Member(username, web, api)
