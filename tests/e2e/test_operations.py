"""What ops do to a running deployment: redeploy, renew certificates, reboot hosts."""

from __future__ import annotations

import os
import re
import subprocess
import time

from load import SteadyLoad
from test_edge import served_certificate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The units each group must have running and enabled at boot.
UNITS = {
    "edge": ["nginx.service", "flaskstack-cert-renewal.timer", "flaskstack-cert-expiry.timer"],
    "app": ["flaskstack-web.socket", "flaskstack-web.service", "flaskstack-worker.service"],
    "db": ["postgresql.service"],
    "cache": ["redis-server.service"],
}


def test_second_deploy_changes_nothing(sandbox):
    started = time.monotonic()
    result = subprocess.run(
        [os.path.join(ROOT, "deploy", "deploy.sh")],
        env={**os.environ, "INVENTORY": os.path.join(ROOT, sandbox.spec["inventory"])},
        capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", result.stdout, re.M)
    assert sorted(name for name, _ in recap) == sorted(h["name"] for h in sandbox.hosts)
    assert {name: int(changed) for name, changed in recap} == {h["name"]: 0 for h in sandbox.hosts}
    print(f"second deploy: changed=0 on every host in {time.monotonic() - started:.0f} s")


def serial(sandbox) -> str:
    return re.search(r"serial=(\w+)", served_certificate(sandbox)).group(1)


def nginx_master_pid(sandbox) -> str:
    return sandbox.ssh(sandbox.edge, "systemctl show -p MainPID --value nginx").stdout.strip()


def test_forced_renewal_serves_a_new_certificate_without_restarting_nginx(sandbox):
    before, pid = serial(sandbox), nginx_master_pid(sandbox)
    with SteadyLoad(f"{sandbox.url}/", sandbox.ca_cert) as load:
        renewal = sandbox.ssh(sandbox.edge, "sudo flaskstack-certbot renew --force-renewal")
        deadline = time.monotonic() + 30
        while serial(sandbox) == before and time.monotonic() < deadline:
            time.sleep(1)
    print(f"requests during the renewal and reload: {load.total}, failed: {load.failures}")
    assert "Congratulations" in renewal.stdout + renewal.stderr, renewal.stdout + renewal.stderr
    assert serial(sandbox) != before, "nginx still serves the old certificate"
    assert nginx_master_pid(sandbox) == pid, "nginx was restarted instead of reloaded"
    assert load.total > 0 and load.failures == {}


def expiry_check(sandbox, *args: str):
    return sandbox.ssh(
        sandbox.edge, "sudo /usr/local/sbin/flaskstack-cert-expiry " + " ".join(args), check=False
    )


def test_expiry_check_reports_served_certificates_and_alerts_when_too_few_days_are_left(sandbox):
    healthy = expiry_check(sandbox)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert sandbox.domain in healthy.stdout
    # Pebble issues 90-day certificates: asking for 100 days left must raise the alarm.
    alarm = expiry_check(sandbox, "--min-days", "100")
    assert alarm.returncode == 1, alarm.stdout + alarm.stderr
    # The timer's unit runs the same check; its status is what monitoring and the journal see.
    unit = sandbox.ssh(
        sandbox.edge, "sudo systemctl start flaskstack-cert-expiry.service", check=False
    )
    assert unit.returncode == 0, unit.stderr
    timer = sandbox.ssh(sandbox.edge, "systemctl is-enabled flaskstack-cert-expiry.timer")
    assert timer.stdout.strip() == "enabled"


def wait_until_ready(sandbox, browser, seconds: int = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if browser.get(f"{sandbox.url}/readyz", timeout=5).status_code == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the site did not come back after the reboot"
        time.sleep(2)


def test_reboot_brings_every_service_back(sandbox, browser):
    for host in sandbox.hosts:
        sandbox.cli("restart", host["name"])
    wait_until_ready(sandbox, browser)
    for host in sandbox.hosts:
        units = [unit for group in host["groups"] for unit in UNITS[group]]
        active = sandbox.ssh(host, "systemctl is-active " + " ".join(units), check=False)
        enabled = sandbox.ssh(host, "systemctl is-enabled " + " ".join(units), check=False)
        states = dict(zip(units, active.stdout.split(), strict=True))
        assert set(states.values()) == {"active"}, (host["name"], states)
        assert set(enabled.stdout.split()) <= {"enabled", "static"}, (host["name"], enabled.stdout)
    assert browser.get(sandbox.url + "/", timeout=10).status_code == 200
