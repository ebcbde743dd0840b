"""The file integrity check (AIDE, roles/base) as an operator meets it: quiet on an untouched
host, failing its unit and naming the file when one changed. It reads every file three times, so
it runs in the single-host stage only; the roles are the same on every host.
"""

from __future__ import annotations


def test_the_file_integrity_check_finds_a_changed_file(sandbox):
    host = sandbox.edge
    # Joins the baseline the deploy started in the background, if it still runs.
    sandbox.ssh(host, "sudo systemctl start flaskstack-integrity-baseline.service", timeout=900)
    since = sandbox.ssh(host, "date +@%s").stdout.strip()
    check = "sudo systemctl start flaskstack-integrity.service"
    clean = sandbox.ssh(host, check, check=False, timeout=900)
    assert clean.returncode == 0, sandbox.journal(host, "flaskstack-integrity", since)[-3000:]

    original = sandbox.ssh(host, "sudo base64 -w0 /etc/issue.net").stdout
    sandbox.ssh(host, "echo tampered | sudo tee -a /etc/issue.net >/dev/null")
    try:
        since = sandbox.ssh(host, "date +@%s").stdout.strip()
        tampered = sandbox.ssh(host, check, check=False, timeout=900)
        journal = sandbox.journal(host, "flaskstack-integrity", since)
        assert tampered.returncode != 0, journal[-3000:]
        assert "/etc/issue.net" in journal
    finally:
        sandbox.ssh(host, f"echo {original} | base64 -d | sudo tee /etc/issue.net >/dev/null")
        sandbox.ssh(host, "sudo systemctl start --no-block flaskstack-integrity-baseline.service")
