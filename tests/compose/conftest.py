"""Fixtures for the Compose stage: the stack that tests/compose/run.sh started, seen from the host.

run.sh describes the running stack in COMPOSE_TEST_* variables; the tests talk to it as a
browser would (HTTPS on the published port, trusting only Pebble's root) and as an operator
would (`docker compose`, `docker inspect`).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from support.https import https_client, names_resolved_to

ROOT = Path(__file__).resolve().parents[2]


def dotenv(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


@dataclass
class Stack:
    project: str
    env_file: Path
    env: dict[str, str]
    https_address: str  # host:port where nginx's 443 is published
    work: Path
    docker: str

    @property
    def site(self) -> str:
        return self.env["SITE_HOST"]

    @property
    def url(self) -> str:
        return f"https://{self.site}"

    @property
    def https_host(self) -> str:
        return self.https_address.rsplit(":", 1)[0]

    @property
    def https_port(self) -> int:
        return int(self.https_address.rsplit(":", 1)[1])

    @property
    def ca_cert(self) -> str:
        return str(self.work / "pebble-root.pem")

    def compose(self, *args: str, check: bool = True, timeout: int = 120, input: str | None = None):
        argv = [
            self.docker, "compose", "--project-name", self.project,
            "--project-directory", str(ROOT),
            "--file", str(ROOT / "docker-compose.yml"),
            "--file", str(ROOT / "tests" / "compose" / "compose.test.yml"),
            "--env-file", str(self.env_file), *args,
        ]  # fmt: skip
        return subprocess.run(
            argv, capture_output=True, text=True, check=check, timeout=timeout, input=input
        )

    def inspect(self, service: str) -> dict:
        container = self.compose("ps", "--quiet", service).stdout.strip()
        assert container, f"no container for service {service}"
        out = subprocess.run(
            [self.docker, "inspect", container], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)[0]

    def curl(self, *args: str, check: bool = False):
        """curl to the site on the published port, as if it were on 443, trusting Pebble's root."""
        argv = [
            "curl", "-sS", "--max-time", "15", "--cacert", self.ca_cert,
            "--connect-to", f"{self.site}:443:{self.https_host}:{self.https_port}",
            "--connect-to", f"www.{self.site}:443:{self.https_host}:{self.https_port}",
            *args,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="session")
def stack() -> Stack:
    if "COMPOSE_TEST_ENV_FILE" not in os.environ:
        pytest.fail("run these checks through tests/compose/run.sh (make test-compose)")
    env_file = Path(os.environ["COMPOSE_TEST_ENV_FILE"])
    stack = Stack(
        project=os.environ["COMPOSE_TEST_PROJECT"],
        env_file=env_file,
        env=dotenv(env_file),
        https_address=os.environ["COMPOSE_TEST_HTTPS"],
        work=Path(os.environ["COMPOSE_TEST_WORK"]),
        docker=os.environ.get("COMPOSE_TEST_DOCKER", "docker"),
    )
    # Pebble makes a new root at every start: fetch the one that issued this run's certificates.
    root = stack.compose(
        "exec", "-T", "pebble",
        "curl", "-sSf", "--cacert", "/etc/pebble/ca.pem", "https://localhost:15000/roots/0",
    ).stdout  # fmt: skip
    assert "BEGIN CERTIFICATE" in root
    Path(stack.ca_cert).write_text(root)
    return stack


@pytest.fixture(scope="session", autouse=True)
def resolve_site_to_published_port(stack: Stack):
    """The test-side `curl --connect-to`: the site's names on 443 go to the published port."""
    names = {stack.site, f"www.{stack.site}"}
    with names_resolved_to(names, stack.https_host, https_port=stack.https_port):
        yield


@pytest.fixture
def browser(stack: Stack) -> requests.Session:
    """A fresh HTTPS client that trusts only Pebble's root, like a user's browser would."""
    return https_client(stack.ca_cert, "flaskstack-compose-test")
