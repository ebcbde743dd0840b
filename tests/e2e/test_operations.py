"""What ops do to a running deployment: redeploy with no change, one deploy at a time, the
certificate expiry check. Faults and operations under load are in test_faults.py."""

from __future__ import annotations

import os
import re
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def test_a_deploy_is_refused_while_another_run_holds_the_lock(sandbox):
    host = sandbox.hosts[0]
    foreign = '{"id": "another-run", "by": "ops@elsewhere", "started": "2026-01-01T00:00:00Z"}'
    sandbox.ssh(host, f"echo '{foreign}' | sudo tee /run/flaskstack-deploy.lock >/dev/null")
    refused = subprocess.run(
        [os.path.join(ROOT, "deploy", "deploy.sh")],
        env={**os.environ, "INVENTORY": os.path.join(ROOT, sandbox.spec["inventory"])},
        capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, "a deploy ran while another held the lock"
    assert "Another deploy holds the lock" in output and "ops@elsewhere" in output, output[-3000:]
    # Nothing past the lock ran, and the refused run left the other run's lock in place.
    assert "Provision PostgreSQL" not in output
    held = sandbox.ssh(host, "cat /run/flaskstack-deploy.lock").stdout
    assert "another-run" in held
    # `make unlock FORCE=1` is the way out when the other run died.
    unlocked = subprocess.run(
        ["make", "--no-print-directory", "unlock", f"INVENTORY={sandbox.spec['inventory']}",
         "FORCE=1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert unlocked.returncode == 0, unlocked.stdout + unlocked.stderr
    gone = sandbox.ssh(host, "test -e /run/flaskstack-deploy.lock", check=False)
    assert gone.returncode == 1, "make unlock left the lock"
