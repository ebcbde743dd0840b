"""The backup host: the pgBackRest repository behind its TLS server, open to the db hosts only.

Its firewall admits the db hosts' addresses on pgBackRest's port and nobody else; its TLS server
admits a client only with a certificate it pins (the db hosts', each naming its host), and the db
host's pins the backup host's the same way. The repository's encryption and the restores through
it are test_pitr.py's.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

import pytest
from test_backups import create_post, run_ops
from test_faults import deploy
from test_pitr import stored_comments

from support.load import WriteLoad

TLS_PORT = 8432  # roles/flaskstack's pgbackrest_tls_port

# Exits 0 when a TCP connection to host:port opens within 3 seconds.
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"


@pytest.fixture(scope="module")
def backup_host(sandbox) -> dict:
    hosts = sandbox.hosts_in("backup")
    assert len(hosts) == 1, "this stage's sandbox has one backup host"
    return hosts[0]


@pytest.fixture(scope="module")
def db_host(sandbox) -> dict:
    return sandbox.hosts_in("db")[0]


def connects(sandbox, source: dict | None, target: dict) -> bool:
    """Whether a TCP connection from the source host (None: another machine) to the target's
    pgBackRest port opens."""
    argv = ["python3", "-c", CONNECT, target["ip"], str(TLS_PORT)]
    if source is None:
        result = subprocess.run(
            ["ip", "netns", "exec", sandbox.probe_netns, *argv],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    else:
        result = sandbox.ssh(source, shlex.join(argv), check=False, timeout=60)
    return result.returncode == 0


def test_the_repository_is_reachable_from_the_db_host_only(sandbox, backup_host, db_host):
    assert connects(sandbox, db_host, backup_host)
    assert not connects(sandbox, None, backup_host)
    # The other way round: only the backup host reaches the db host's TLS server.
    assert connects(sandbox, backup_host, db_host)
    assert not connects(sandbox, None, db_host)


def test_the_tls_server_refuses_a_client_without_a_pinned_certificate(sandbox, db_host):
    """From the db host itself (past the firewall): pgBackRest with a certificate of its own
    making, naming the db host, is refused; with the host's own certificate it is answered."""
    as_postgres = "sudo -u postgres"
    stranger = sandbox.ssh(db_host, f"{as_postgres} mktemp -d -p /var/lib/postgresql").stdout
    stranger = stranger.strip()
    make = (
        f"{as_postgres} openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        f"-days 1 -keyout {stranger}/host.key -out {stranger}/host.crt -subj /CN={db_host['name']}"
    )
    # pgbackrest info reports a repository it cannot read in its output, and exits 0.
    info = f"{as_postgres} pgbackrest --stanza=flaskstack --output=json info"
    try:
        sandbox.ssh(db_host, make)
        refused = sandbox.ssh(
            db_host,
            f"{info} --repo1-host-cert-file={stranger}/host.crt "
            f"--repo1-host-key-file={stranger}/host.key",
        )
    finally:
        sandbox.ssh(db_host, f"sudo rm -rf {stranger}")
    status = json.loads(refused.stdout)[0]["repo"][0]["status"]
    assert "TLS error" in status["message"] and "unknown ca" in status["message"], status
    print(f"a stranger's certificate: {status['message']}")
    answered = json.loads(sandbox.ssh(db_host, info).stdout)[0]
    assert answered["status"]["code"] == 0, answered["status"]


def test_the_backups_run_on_the_backup_host_as_its_own_user(sandbox, backup_host, db_host):
    show = "systemctl show -p User --value flaskstack-pgbackrest-backup@full.service"
    assert sandbox.ssh(backup_host, show).stdout.strip() == "pgbackrest"
    timers = (
        "systemctl is-enabled flaskstack-pgbackrest-full.timer flaskstack-pgbackrest-diff.timer"
    )
    assert sandbox.ssh(backup_host, timers).stdout.split() == ["enabled", "enabled"]
    # The db host takes none itself, and holds no copy of the repository's passphrase.
    assert sandbox.ssh(db_host, "systemctl cat flaskstack-pgbackrest-full.timer",
                       check=False).returncode != 0  # fmt: skip
    grep = "sudo grep -c cipher-pass /etc/pgbackrest/pgbackrest.conf"
    assert sandbox.ssh(db_host, grep, check=False).stdout.strip() == "0"
    assert sandbox.ssh(backup_host, grep).stdout.strip() == "1"


def test_a_lost_backup_host_costs_no_write_and_a_deploy_starts_a_new_repository(
    sandbox, backup_host, db_host, member
):
    """The backup host's power cut and its disk thrown away under the write load: the site goes
    on (Postgres queues its WAL), and `make deploy` onto the empty host in its place starts a
    new repository with a full backup, into which the queued WAL goes. The history before is
    lost with the old disk: the README says so."""
    post_id = create_post(sandbox, member, "While the backup host was away")
    with WriteLoad(sandbox.url, member.api, post_id) as load:
        sandbox.cli("replace", backup_host["name"])
        time.sleep(10)
    print(f"load while the backup host was lost: {load.summary()}")
    assert load.failures() == {}
    assert load.missing_from(stored_comments(sandbox, db_host, post_id)) == []

    started = time.monotonic()
    deployed = deploy(sandbox)
    assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-2000:]
    print(f"make deploy onto the new backup host: {time.monotonic() - started:.0f} s")
    listing = run_ops(sandbox, "backups.sh")
    print(listing.stdout)
    assert listing.returncode == 0, listing.stdout[-3000:] + listing.stderr[-2000:]
    assert len(re.findall(r"^  \d{8}-\d{6}F\s+full\s", listing.stdout, re.M)) == 1
    # The new repository is encrypted like the old one, and WAL reaches it again.
    assert "(aes-256-cbc, from" in listing.stdout
    assert "newest archived WAL: " in listing.stdout
