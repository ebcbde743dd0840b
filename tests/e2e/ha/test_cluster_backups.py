"""Point-in-time recovery of the Patroni cluster: whichever member is the primary archives its WAL
into the backup host's repository, the backup host reads the base backups from a standby, and a
restore replays the WAL of every primary the cluster has had. (The first full backup and what
`make backups` lists: test_pitr's first test, run by this stage too.)"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from test_backups import create_post, psql, run_ops, table_counts

DATABASE = "flaskstack"  # roles/flaskstack's postgres_app_database
BACKUP_LOG = "/var/log/pgbackrest/flaskstack-backup.log"  # pgBackRest's log-path, stanza, command


def test_the_base_backups_are_read_from_a_standby(sandbox, cluster):
    cluster.wait_for_members(3)
    backup_host = sandbox.hosts_in("backup")[0]
    lines_before = int(sandbox.ssh(backup_host, f"sudo wc -l {BACKUP_LOG}").stdout.split()[0])
    started = sandbox.ssh(
        backup_host, "sudo systemctl start flaskstack-pgbackrest-backup@diff.service", check=False
    )
    log = sandbox.ssh(backup_host, f"sudo tail -n +{lines_before + 1} {BACKUP_LOG}").stdout
    assert started.returncode == 0, log[-3000:]
    print(log[-1500:])
    # pgBackRest waits for the standby to replay up to the backup's start, then copies from it.
    assert "replay on the standby reached" in log, log[-3000:]
    assert re.search(r"backup command end: completed successfully", log), log[-3000:]


def test_a_restore_replays_the_wal_of_every_primary_the_cluster_had(sandbox, cluster, member):
    first_primary = cluster.leader()
    print(sandbox.make("switchover").stdout[-300:])
    cluster.wait_for_members(3)
    primary = cluster.leader()
    assert primary != first_primary
    create_post(sandbox, member, "Written after a switchover")
    live = table_counts(sandbox, cluster.host(primary), DATABASE)

    # make restore runs on the primary: it marks the newest write with a restore point, waits for
    # its WAL in the repository, restores into a scratch cluster and counts every table.
    result = run_ops(sandbox, "restore.sh")
    print(result.stdout[result.stdout.rfind("restore of stanza") :])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "live cluster archived up to" in result.stdout, result.stdout[-3000:]
    restored = dict(re.findall(r"^public\.(\w+)\s+(\d+)\b", result.stdout, re.M))
    # Nothing else writes meanwhile: the newest archived state is the live one.
    assert {table: int(rows) for table, rows in restored.items()} == live


def test_an_operator_mistake_is_undone_on_every_member(sandbox, cluster, member):
    """All posts deleted at T; `make restore TIME=<T - 1 s> INTO=live` restores the primary and
    rebuilds the cluster from it: every member holds the posts again on a new timeline, the
    cluster is synchronous again, the site writes, and archiving goes on."""
    members_before = cluster.wait_for_members(3)
    leader = cluster.leader()
    timeline_before = max(m["TL"] for m in members_before)
    post_id = create_post(sandbox, member, "Before the mistake on the cluster")
    posts_before = psql(sandbox, cluster.host(leader), DATABASE, "SELECT count(*) FROM posts")
    time.sleep(2)
    mistake_wall = time.time()  # the hosts share this machine's clock (containers)
    psql(sandbox, cluster.host(leader), DATABASE,
         "SET ROLE flaskstack; BEGIN; DELETE FROM comments; DELETE FROM posts; COMMIT")  # fmt: skip
    time.sleep(2)
    target = datetime.fromtimestamp(mistake_wall - 1, UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")

    result = run_ops(sandbox, "restore.sh", TIME=target, INTO="live", CONFIRM=DATABASE)
    print(result.stdout[result.stdout.rfind("restore of stanza") :])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The state before the restore stays in the repository.
    assert "restore point flaskstack-before-restore-" in result.stdout

    members = cluster.wait_for_members(3)
    assert cluster.leader() == leader  # restored where the primary was
    assert min(m["TL"] for m in members) > timeline_before, members
    assert any(m["Role"] == "Sync Standby" for m in members), members
    assert cluster.settings()["synchronous_mode"] is True, cluster.settings()
    for name in (m["Member"] for m in members):  # the standbys answer reads
        posts = psql(sandbox, cluster.host(name), DATABASE, "SELECT count(*) FROM posts")
        assert posts == posts_before, f"{name}: {posts} posts, {posts_before} before the mistake"
    # The app was stopped during the restore: each edge's nginx may still skip the app hosts it
    # saw fail then, for nginx_upstream_fail_timeout, and answer 502 meanwhile.
    deadline = time.monotonic() + 30
    while True:
        page = member.api.get(f"{sandbox.url}/api/v1/posts/{post_id}", timeout=15)
        if page.status_code != 502 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert page.status_code == 200, page.text
    create_post(sandbox, member, "Written after the live restore")
    standby = next(m["Member"] for m in members if m["Role"] == "Sync Standby")
    posts = psql(sandbox, cluster.host(standby), DATABASE, "SELECT count(*) FROM posts")
    assert int(posts) == int(posts_before) + 1  # acknowledged: on the synchronous standby too
    backups = run_ops(sandbox, "backups.sh")
    assert backups.returncode == 0, backups.stdout[-3000:]
    print(f"restored {len(members)} members to {target} in {result.seconds:.0f} s "
          f"(timeline {timeline_before} -> {members[0]['TL']}), {posts_before} posts")  # fmt: skip
