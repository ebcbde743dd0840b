"""`make audit` as an auditor runs it: Lynis, ssh-audit and systemd-analyze security on one host of
each kind (every host of the single-host sandbox).

The stage's last module: ssh-audit's unfinished handshakes may earn this machine a short
penalty from OpenSSH 10.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The units each group brings, so that "no unit above the bar" can never hold vacuously.
UNITS_BY_GROUP = {
    "edge": {"nginx.service", "flaskstack-cert-renewal.service", "flaskstack-cert-expiry.service"},
    "app": {"flaskstack-web.service", "flaskstack-worker.service"},
    "db": {"postgresql@17-main.service", "flaskstack-backup.service"},
    "cache": {"redis-server.service"},
    "backup": {"flaskstack-pgbackrest-server.service"},
    "monitor": {
        "prometheus.service",
        "prometheus-alertmanager.service",
        "prometheus-blackbox-exporter.service",
    },
}
# Several hosts in a group make it highly available (Patroni runs the server, Sentinels watch Redis,
# keepalived moves the edges' address): the engines' units replace or join the group's.
HA_UNITS_BY_GROUP = {
    "edge": {"keepalived.service"},
    "db": {"patroni.service", "etcd.service"},
    "cache": {"redis-sentinel.service"},
}
HA_REPLACES = {"postgresql@17-main.service"}
# With a monitor host, every host runs node_exporter, and each group its exporter.
EXPORTERS_BY_GROUP = {
    "edge": {"prometheus-nginx-exporter.service", "mtail.service"},
    "app": {"flaskstack-metrics.service"},
    "db": {"prometheus-postgres-exporter.service"},
    "cache": {"prometheus-redis-exporter.service"},
}
# pgBackRest's base backups run on the backup host, or on the db host when there is none; with a
# backup host, the db host runs a TLS server of its own for it.
BASE_BACKUPS = {
    "flaskstack-pgbackrest-backup@full.service",
    "flaskstack-pgbackrest-backup@diff.service",
}
EVERY_HOST = {"flaskstack-integrity.service", "flaskstack-integrity-baseline.service"}


def one_host_of_each_kind(sandbox) -> list[dict]:
    """The first host of each set of groups. Hosts in the same groups get the same roles, and a
    second deploy changes nothing on any of them; Lynis keeps a core busy on each host it audits."""
    kinds: dict[tuple[str, ...], dict] = {}
    for host in sandbox.hosts:
        kinds.setdefault(tuple(sorted(host["groups"])), host)
    return list(kinds.values())


def declares_worker(sandbox, host) -> bool:
    """Whether the app the host serves has a worker (its flaskstack.toml)."""
    current = "/srv/flaskstack/current"
    command = f"{current}/.venv/bin/python {current}/deploy/manifest.py get worker {current}"
    return sandbox.ssh(host, command).stdout.strip() != ""


def test_every_kind_of_host_passes_lynis_ssh_audit_and_systemd_analyze(sandbox):
    inventory = sandbox.spec["inventory"]
    audited = one_host_of_each_kind(sandbox)
    limit = ",".join(host["name"] for host in audited)
    run = subprocess.run(
        [str(ROOT / "deploy" / "audit.sh")],
        env={**os.environ, "INVENTORY": inventory, "LIMIT": limit},
        capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    print(run.stdout, run.stderr)
    # Named as deploy/ops-common.sh names an inventory's directories.
    slug = re.sub(r"[^A-Za-z0-9.-]", "_", os.path.relpath(ROOT / inventory, ROOT))
    summary = json.loads((ROOT / ".build" / "audit" / slug / "summary.json").read_text())
    assert summary["min_index"] == 80 and summary["max_exposure"] == 2.5
    assert set(summary["hosts"]) == {host["name"] for host in audited}
    backup_hosts = sandbox.hosts_in("backup")
    for host in audited:
        audit = summary["hosts"][host["name"]]
        expected = EVERY_HOST.union(*(UNITS_BY_GROUP[group] for group in host["groups"]))
        for group in set(host["groups"]) & set(HA_UNITS_BY_GROUP):
            if len(sandbox.hosts_in(group)) > 1:
                expected = (expected - HA_REPLACES) | HA_UNITS_BY_GROUP[group]
        if "backup" in host["groups"] or ("db" in host["groups"] and not backup_hosts):
            expected |= BASE_BACKUPS
        if "db" in host["groups"] and backup_hosts:
            expected.add("flaskstack-pgbackrest-server.service")
        if sandbox.hosts_in("monitor"):
            expected.add("prometheus-node-exporter.service")
            expected = expected.union(*(EXPORTERS_BY_GROUP.get(g, set()) for g in host["groups"]))
        if "app" in host["groups"] and not declares_worker(sandbox, host):
            expected.discard("flaskstack-worker.service")  # the second app (test_second_app.py)
        assert expected <= set(audit["units"]), (host["name"], sorted(audit["units"]))
        assert audit["problems"] == [], (host["name"], audit["problems"])
    assert run.returncode == 0


def test_the_audit_leaves_no_trace(sandbox):
    for host in sandbox.hosts:
        lynis = sandbox.ssh(host, "dpkg-query --show --showformat='${db:Status-Status}' lynis",
                            check=False).stdout  # fmt: skip
        assert lynis in ("", "not-installed"), (host["name"], lynis)
        leftovers = sandbox.ssh(host, "sudo ls /var/log/lynis.log /var/log/lynis-report.dat "
                                "/etc/lynis 2>/dev/null; true").stdout  # fmt: skip
        assert leftovers == "", (host["name"], leftovers)
