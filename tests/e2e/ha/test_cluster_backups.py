"""Point-in-time recovery of the Patroni cluster: whichever member is the primary archives its WAL
into the backup host's repository, the backup host reads the base backups from a standby, and a
restore replays the WAL of every primary the cluster has had. (The first full backup and what
`make backups` lists: test_pitr's first test, run by this stage too.)"""

from __future__ import annotations

import re

from test_backups import create_post, run_ops, table_counts

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


def test_a_live_restore_of_the_cluster_is_refused_and_changes_nothing(sandbox, cluster):
    leader = cluster.leader()
    result = run_ops(sandbox, "restore.sh", INTO="live", CONFIRM=DATABASE)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "INTO=live is not built for a Patroni cluster yet" in output, output[-3000:]
    assert cluster.leader() == leader
    cluster.wait_for_members(3)
