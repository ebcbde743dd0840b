"""The app's scheduled jobs (flaskstack.toml): a systemd timer on one app host (the role's
app_scheduler_host, the first app host unless the inventory says otherwise) and none on the
others; a run does its job with the live release and its settings; moving the scheduler host
moves the jobs in one deploy."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from test_faults import APP_ONLY

ROOT = Path(__file__).resolve().parents[3]
JOB = "purge-deleted"  # flaskstack.toml: flask purge-deleted --days 30, daily
TIMER, SERVICE = f"flaskstack-job-{JOB}.timer", f"flaskstack-job-{JOB}.service"


def unit_property(sandbox, host: dict, unit: str, name: str) -> str:
    return sandbox.ssh(host, f"systemctl show --property={name} --value {unit}").stdout.strip()


def schedulers(sandbox) -> list[str]:
    """The app hosts that have the job's timer, and check that it is armed where it is."""
    found = []
    for host in sandbox.hosts_in("app"):
        if unit_property(sandbox, host, TIMER, "LoadState") == "not-found":
            assert unit_property(sandbox, host, SERVICE, "LoadState") == "not-found", host["name"]
            continue
        assert unit_property(sandbox, host, TIMER, "ActiveState") == "active", host["name"]
        assert unit_property(sandbox, host, TIMER, "UnitFileState") == "enabled", host["name"]
        assert unit_property(sandbox, host, TIMER, "NextElapseUSecRealtime"), host["name"]
        found.append(host["name"])
    return found


def psql(sandbox, sql: str) -> str:
    command = "sudo -u postgres psql -X -q -A -t -v ON_ERROR_STOP=1 -d flaskstack -c "
    return sandbox.ssh(sandbox.primary_db_host(), command + shlex.quote(sql)).stdout.strip()


def delete_post_days_ago(sandbox, post_id: int, days: int) -> None:
    when = f"now() - interval '{int(days)} days'"
    psql(sandbox, f"UPDATE posts SET deleted_at = {when} WHERE id = {int(post_id)}")  # noqa: S608


def post_exists(sandbox, post_id: int) -> bool:
    return psql(sandbox, f"SELECT count(*) FROM posts WHERE id = {int(post_id)}") == "1"  # noqa: S608 - an integer


def deploy_app(sandbox, *args: str) -> None:
    result = subprocess.run(
        [str(ROOT / "deploy" / "deploy.sh"), *APP_ONLY, *args],
        env={**os.environ, "INVENTORY": str(ROOT / sandbox.spec["inventory"])},
        capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_job_is_scheduled_on_the_first_app_host_only(sandbox):
    first = sandbox.hosts_in("app")[0]["name"]
    assert schedulers(sandbox) == [first]


def test_a_run_purges_what_was_deleted_long_ago_and_runs_nowhere_else(sandbox, member):
    ids = []
    for title in ("deleted long ago", "deleted yesterday"):
        created = member.api.post(
            f"{sandbox.url}/api/v1/posts", json={"title": title, "body": "Gone soon."}, timeout=15
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    old, recent = ids
    delete_post_days_ago(sandbox, old, 31)
    delete_post_days_ago(sandbox, recent, 1)

    scheduler, *others = sandbox.hosts_in("app")
    since = f"@{int(time.time()) - 1}"
    # What the timer starts; a oneshot unit: this returns when the run has ended.
    sandbox.ssh(scheduler, f"sudo systemctl start {SERVICE}")
    assert unit_property(sandbox, scheduler, SERVICE, "Result") == "success"
    runs = sandbox.journal(scheduler, SERVICE, since).count("purged ")
    print(f"{SERVICE} on {scheduler['name']}: {runs} run")
    assert runs == 1
    assert not post_exists(sandbox, old)
    assert post_exists(sandbox, recent)
    for host in others:
        assert "purged " not in sandbox.journal(host, SERVICE, since), host["name"]


def test_moving_the_scheduler_host_moves_the_job_in_one_deploy(sandbox):
    # The stage's next deploy, with the inventory's default, moves it back.
    last = sandbox.hosts_in("app")[-1]["name"]
    deploy_app(sandbox, "-e", f"app_scheduler_host={last}")
    assert schedulers(sandbox) == [last]
