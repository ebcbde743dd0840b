"""Fixtures for the end-to-end stage: a deployed sandbox, checked from outside as a user would.

The sandbox (tools/sandbox/sandbox.sh) describes itself in sandbox.json; these tests only read
that file and talk to the hosts over the network (HTTPS, SSH), never through Ansible internals.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


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
            lines = self.ssh(self.edge, grep, check=False).stdout
            if lines or time.monotonic() > deadline:
                assert lines, f"no line with {text!r} in nginx's access log after {timeout} s"
                return lines
            time.sleep(0.25)

    def curl(self, *args: str, netns: str | None = None, check: bool = False):
        """curl with the site's name resolved to the edge host, trusting the ACME CA."""
        argv = [
            "curl", "-sS", "--max-time", "15", "--cacert", self.ca_cert,
            "--resolve", f"{self.domain}:443:{self.edge['ip']}",
            "--resolve", f"{self.domain}:80:{self.edge['ip']}",
            "--resolve", f"www.{self.domain}:443:{self.edge['ip']}",
            "--resolve", f"www.{self.domain}:80:{self.edge['ip']}",
            *args,
        ]  # fmt: skip
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)

    def cli(self, *args: str, check: bool = True, timeout: int = 900):
        """Run tools/sandbox/sandbox.sh for this sandbox (restart a host, …)."""
        env = {**os.environ, "SANDBOX_ID": str(self.sandbox_id)}
        return subprocess.run(
            [str(ROOT / "deploy" / "sandbox" / "sandbox.sh"), *args],
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
    """The test-side equivalent of `curl --resolve`: the site's names go to the edge host."""
    names = {sandbox.domain, f"www.{sandbox.domain}"}
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real(sandbox.edge["ip"] if host in names else host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    yield
    socket.getaddrinfo = real


def https_client(sandbox: Sandbox, agent: str = "flaskstack-e2e") -> requests.Session:
    """An HTTPS client that trusts only the sandbox's ACME root, like a user's browser."""
    session = requests.Session()
    # Ignore the environment: REQUESTS_CA_BUNDLE would silently replace `verify`, and a proxy
    # setting would send the sandbox's traffic elsewhere.
    session.trust_env = False
    session.verify = sandbox.ca_cert
    session.headers["User-Agent"] = agent
    return session


@pytest.fixture
def browser(sandbox: Sandbox) -> requests.Session:
    return https_client(sandbox)


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
    from test_user_flows import submit

    username = "member-" + secrets.token_hex(4)
    password = secrets.token_urlsafe(16)
    web = https_client(sandbox)
    registered = submit(
        web, f"{sandbox.url}/register",
        username=username, email=f"{username}@example.org", password=password, confirm=password,
    )  # fmt: skip
    assert registered.status_code == 200, registered.text[:500]

    api = https_client(sandbox)
    token = api.post(f"{sandbox.url}/api/v1/tokens",
                     json={"username": username, "password": password}, timeout=15)  # fmt: skip
    assert token.status_code == 201, token.text
    api.headers["Authorization"] = f"Bearer {token.json()['token']}"
    return Member(username, web, api)
