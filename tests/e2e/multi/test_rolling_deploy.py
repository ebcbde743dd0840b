"""The last deploy's log: migrations ran once, and the app hosts switched one at a time.

Capacity never drops to zero when only one app host restarts at a time; the deploy log is where
Ansible shows its batches (one "PLAY [Switch …]" per batch, with the hosts it touched).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RESULT = re.compile(r"^(?:ok|changed|skipping|fatal): \[([^\]]+)\]", re.M)


def last_deploy_log(sandbox) -> str:
    # deploy/deploy.sh keeps one log per inventory, named after its path (see inventory_slug).
    slug = re.sub(r"[^A-Za-z0-9.\n-]", "_", sandbox.spec["inventory"].rstrip("/"))
    return (ROOT / ".build" / "deploy" / slug / "deploy.log").read_text()


def plays(log: str, title: str) -> list[set[str]]:
    """For each run of the play with this title, the hosts that reported a task result."""
    chunks = re.split(r"^PLAY \[", log, flags=re.M)[1:]
    return [set(RESULT.findall(chunk)) for chunk in chunks if chunk.startswith(title + "]")]


def test_app_hosts_switch_one_at_a_time_after_a_single_migration(sandbox):
    log = last_deploy_log(sandbox)
    app_hosts = [h["name"] for h in sandbox.hosts_in("app")]

    # Once, on the first app host (app[0]), before any host switches.
    assert plays(log, "Migrate the database") == [{app_hosts[0]}]
    batches = plays(log, "Switch the app hosts to the new release")
    assert all(len(batch) == 1 for batch in batches), batches
    assert [next(iter(batch)) for batch in batches] == app_hosts, batches
