"""Where things are: the repository, the programs the bench runs, where a single-host
deployment puts its servers (the bench's own network namespace lets it use the same places),
and the Ansible roles' defaults the bench configures them with."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEFAULT_OUTPUT = REPO / ".build" / "bench" / "results.json"

SITE_HOST = "flaskstack.test"
SITE_ALIASES = "www.flaskstack.test"
CERT_NAME = SITE_HOST
APP_ADDRESS = ("127.0.0.1", 8000)  # roles/flaskstack: app_port, loopback on a single host
# nginx reaches gunicorn through a unix socket on a single host (roles/flaskstack:
# app_unix_socket); the bench's is in its work directory. Figure 2 uses the TCP address.
APP_SOCKET = "app.sock"


def role_defaults(role: str) -> dict:
    """A role's defaults as its tasks see them: those of the roles it depends on (meta/main.yml:
    roles/flaskstack holds the settings the roles share), then its own."""
    directory = REPO / "ansible/roles" / role
    meta = directory / "meta/main.yml"
    dependencies = (
        (yaml.safe_load(meta.read_text()) or {}).get("dependencies") if meta.exists() else None
    )
    defaults = {}
    for dependency in dependencies or []:
        name = dependency if isinstance(dependency, str) else dependency["role"]
        defaults.update(role_defaults(name))
    defaults.update(yaml.safe_load((directory / "defaults/main.yml").read_text()) or {})
    return defaults
