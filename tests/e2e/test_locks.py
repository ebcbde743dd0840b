"""Every lock file installs, with deploy/venv.sh and the pinned pip, exactly as it is pinned, on
each interpreter the project bootstraps from: the controller's python3 (Debian 12 on CI) and
the sandbox host's (Debian 13). Against the live index, in a fresh virtualenv each time.

This is the check that would have caught Debian 12's pip 23.0.1 rejecting requirements-dev.txt
once coverage 7.17.5 appeared upstream: any installer or lock that lets an upstream release
change what gets installed fails here, naming the package.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ["deploy/venv.sh", "requirements-pip.txt", "tests/e2e/installed_vs_lock.py"]
LOCKS = {
    "app": "requirements.txt",
    "dev": "requirements-dev.txt",
    "certbot": "deploy/certbot/requirements.txt",
}
# What deploy/venv.sh is asked to run, in a copy of the files above: a fresh virtualenv, the lock
# installed, then the comparison of what is in it with both locks.
SCRIPT = """set -eu
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
PYTHON=/usr/bin/python3 deploy/venv.sh "$venv" {lock}
"$venv/bin/python" tests/e2e/installed_vs_lock.py {lock} requirements-pip.txt
"""


def files_archive() -> bytes:
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in INSTALLER + list(LOCKS.values()):
            tar.add(ROOT / path, arcname=path)
    return buffer.getvalue()


def run_on_controller(script: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as workdir:
        for path in INSTALLER + list(LOCKS.values()):
            (Path(workdir) / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, Path(workdir) / path)
        return subprocess.run(
            ["sh", "-c", script], cwd=workdir, capture_output=True, text=True, timeout=900
        )


def run_on_host(sandbox, script: str) -> subprocess.CompletedProcess:
    host = sandbox.hosts_in("app")[0]
    remote = (
        'set -eu; work=$(mktemp -d); trap \'rm -rf "$work"\' EXIT; cd "$work"; tar -x; '
        f"sh -c {shlex.quote(script)}"
    )
    argv = sandbox.ssh_argv(host, remote)
    return subprocess.run(argv, input=files_archive(), capture_output=True, timeout=900)


@pytest.mark.parametrize("where", ["controller", "debian13-host"])
@pytest.mark.parametrize("lock", list(LOCKS))
def test_lock_installs_exactly_what_it_pins(sandbox, where, lock):
    script = SCRIPT.format(lock=LOCKS[lock])
    if where == "controller":
        result = run_on_controller(script)
        stdout, stderr = result.stdout, result.stderr
    else:
        result = run_on_host(sandbox, script)
        stdout, stderr = result.stdout.decode(), result.stderr.decode()
    report_line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    assert report_line.startswith("{"), (
        f"{LOCKS[lock]} did not install on the {where}'s python3:\n{stderr[-3000:]}"
    )
    report = json.loads(report_line)
    assert result.returncode == 0, (
        f"{LOCKS[lock]} on the {where}'s Python {report['python']} installs other than it pins: "
        f"missing {report['missing']}, not in the lock {report['unexpected']}, "
        f"other versions {report['other_version']}"
    )
    expected_python = {"controller": "3.11.", "debian13-host": "3.13."}[where]
    assert report["python"].startswith(expected_python), report["python"]
    print(f"{LOCKS[lock]} on the {where} (Python {report['python']}): "
          f"{report['installed']} packages, as pinned")  # fmt: skip
