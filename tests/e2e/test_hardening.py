"""What an auditor checks on the hosts themselves: who may log in where, and how."""

from __future__ import annotations

import subprocess


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


def sshd_settings(sandbox, host) -> dict[str, str]:
    """sshd's effective settings (sshd -T), the last value of each keyword."""
    config = sandbox.ssh(host, "sudo sshd -T").stdout
    return dict(line.split(" ", 1) for line in config.splitlines() if " " in line)


def test_ssh_offers_post_quantum_key_exchange_and_only_an_ed25519_host_key(sandbox):
    for host in sandbox.hosts:
        settings = sshd_settings(sandbox, host)
        kex = settings["kexalgorithms"].split(",")
        assert kex[0] == "mlkem768x25519-sha256", (host["name"], kex)
        assert all(name.startswith(("mlkem", "sntrup")) for name in kex), (host["name"], kex)
        assert settings["hostkeyalgorithms"] == "ssh-ed25519"
        assert all(mac.endswith("-etm@openssh.com") and "sha1" not in mac
                   for mac in settings["macs"].split(",")), settings["macs"]  # fmt: skip
        assert settings["allowusers"] == sandbox.spec["ssh_user"]
        assert settings["loglevel"] == "VERBOSE"
        # Removed, not just unlisted.
        files = sandbox.ssh(host, "sudo ls /etc/ssh").stdout.split()
        host_keys = sorted(name for name in files if name.startswith("ssh_host_"))
        assert host_keys == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"], host["name"]


FLOOD = """
import socket, sys
source, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
accepted = 0
for _ in range(count):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(0.3)
    try:
        s.connect((target, 22))
        accepted += 1
    except OSError:
        pass
    finally:
        s.close()
print(accepted)
"""


def test_a_flood_of_ssh_connections_from_one_address_is_cut_off(sandbox):
    # From an address of its own on the probe (another machine), so that the budget it spends
    # is nobody else's; the deploy user's own logins keep working meanwhile.
    subnet = sandbox.edge["ip"].rsplit(".", 1)[0]
    flooder = f"{subnet}.249"
    netns = ["ip", "netns", "exec", sandbox.probe_netns]
    link = subprocess.run([*netns, "ip", "-o", "-4", "addr", "show"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    device = next(line.split()[1] for line in link.splitlines() if f" {subnet}." in line)
    subprocess.run([*netns, "ip", "addr", "add", f"{flooder}/24", "dev", device], check=True)
    try:
        flood = subprocess.run(
            [*netns, "python3", "-c", FLOOD, flooder, sandbox.edge["ip"], "150"],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
    finally:
        subprocess.run([*netns, "ip", "addr", "del", f"{flooder}/24", "dev", device], check=True)
    accepted = int(flood.stdout)
    print(f"ssh flood from one address: {accepted} of 150 connections accepted")
    assert 30 <= accepted < 150
    assert sandbox.ssh(sandbox.edge, "true").returncode == 0


def test_security_updates_are_installed(sandbox):
    for host in sandbox.hosts:
        pending = sandbox.ssh(host, "sudo /usr/local/sbin/flaskstack-pending-security-updates")
        assert pending.stdout == "", (host["name"], pending.stdout)


def test_postgres_configuration_is_readable_by_postgres_only(sandbox):
    readable = sandbox.ssh(db_host(sandbox), "sudo find /etc/postgresql -type f -perm -o=r").stdout
    assert readable == ""


NETWORK_SYSCTLS = {  # a sample of roles/base's base_sysctl_network
    "net/ipv4/conf/all/accept_redirects": "0",
    "net/ipv4/conf/all/send_redirects": "0",
    "net/ipv4/conf/all/rp_filter": "1",
    "net/ipv4/conf/all/log_martians": "1",
    "net/ipv4/conf/all/forwarding": "0",
    "net/ipv6/conf/all/accept_redirects": "0",
}


def test_network_kernel_settings_are_hardened(sandbox):
    paths = " ".join(f"/proc/sys/{key}" for key in NETWORK_SYSCTLS)
    for host in sandbox.hosts:
        values = sandbox.ssh(host, f"cat {paths}").stdout.split()
        assert dict(zip(NETWORK_SYSCTLS, values, strict=True)) == NETWORK_SYSCTLS, host["name"]
