"""Point-in-time recovery off the host: WAL archiving and base backups with pgBackRest into a
repository on the sandbox's backup host (behind pgBackRest's TLS server) or, without one, its S3
bucket (tools/sandbox/s3_server.py); encrypted, listed by `make backups`.

Checked from outside, as an operator and an auditor would: what `make backups` says, what the
repository holds (read over SSH on the backup host, or the bucket's own S3 API), and how long a
write takes to reach it.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from test_backups import create_post, psql, run_ops, table_counts
from test_faults import FaultTable, deploy_failure

from support.load import WriteLoad

ROOT = Path(__file__).resolve().parents[2]
STANZA = "flaskstack"  # the role's default (pgbackrest_stanza)
PREFIX = "flaskstack"  # the role's default (pgbackrest_s3_path), without its leading slash
ARCHIVE_TIMEOUT = 60  # the role's default (pgbackrest_archive_timeout)
DATABASE = "flaskstack"  # roles/flaskstack's postgres_app_database

DRILL_COLUMNS = ("drill", "acked writes", "missing", "RPO", "RTO", "where the time went")


@pytest.fixture(scope="module")
def drills(sandbox):
    """The drills' outcomes, printed at the end of the module and of the stage (after the fault
    table)."""
    table = FaultTable(DRILL_COLUMNS)
    yield table
    where = "on the backup host" if sandbox.hosts_in("backup") else "in the S3 bucket"
    table.report(sandbox, f"Restore drills (pgBackRest, repository {where})", mode="a")


def restore_steps(output: str) -> str:
    found = re.search(r"^steps: (.*)$", output, re.M)
    return found.group(1) if found else "?"


@pytest.fixture(scope="module")
def db_host(sandbox) -> dict:
    return sandbox.hosts_in("db")[0]


class BucketRepository:
    """The repository in the sandbox's S3 bucket, read and written over its S3 API as pgBackRest
    does (TLS, signed with the hosts' key)."""

    where = "S3 bucket off the host"

    def __init__(self, sandbox):
        self.sandbox = sandbox
        secrets = Path(sandbox.spec["state_dir"]) / "secrets"
        self.user = ":".join(
            (secrets / name).read_text().strip()
            for name in ("pgbackrest_s3_key", "pgbackrest_s3_key_secret")
        )

    def request(self, path: str, *curl_args: str) -> bytes:
        url = f"https://{self.sandbox.spec['s3_endpoint']}/{self.sandbox.spec['s3_bucket']}/{path}"
        result = subprocess.run(
            ["curl", "-fsS", "--cacert", self.sandbox.spec["acme_server_ca"],
             "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", self.user, *curl_args, url],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        return result.stdout

    def key(self, area: str, name: str) -> str:
        return f"{PREFIX}/{area}/{STANZA}/{name}"

    def keys(self, area: str) -> list[str]:
        """The files of the stanza's archive or backup area (the first 1000, in key order)."""
        prefix = f"{PREFIX}/{area}/{STANZA}/"
        listing = self.request(f"?list-type=2&max-keys=1000&prefix={quote(prefix)}")
        return re.findall(r"<Key>([^<]+)</Key>", listing.decode())

    def head(self, key: str, size: int) -> bytes:
        return self.request(key, "--range", f"0-{size - 1}")

    @contextmanager
    def damaged(self, key: str, scratch: Path):
        """One byte of the file flipped (a failing disk, a buggy store), put back afterwards."""
        original = self.request(key)
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0xFF
        for name, content in (("damaged", damaged), ("original", original)):
            (scratch / name).write_bytes(content)
        self.request(key, "--upload-file", str(scratch / "damaged"))
        try:
            yield
        finally:
            self.request(key, "--upload-file", str(scratch / "original"))


# Flips the middle byte of the file named by its argument, in place.
FLIP_MIDDLE_BYTE = """
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(os.path.getsize(sys.argv[1]) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0xFF]))
"""


class HostRepository:
    """The repository on the backup host's disk (pgBackRest's TLS server in front), read and
    written over SSH as root: what a person with a shell on that host could do to it."""

    where = "backup host"
    path = "/var/lib/pgbackrest"  # the role's default (pgbackrest_repository_path)

    def __init__(self, sandbox, host: dict):
        self.sandbox, self.host = sandbox, host

    def key(self, area: str, name: str) -> str:
        return f"{self.path}/{area}/{STANZA}/{name}"

    def keys(self, area: str) -> list[str]:
        find = f"sudo find {self.path}/{area}/{STANZA} -type f"
        return sorted(self.sandbox.ssh(self.host, find).stdout.split())

    def head(self, key: str, size: int) -> bytes:
        encoded = self.sandbox.ssh(self.host, f"sudo head -c {size:d} {key} | base64 -w0").stdout
        return base64.b64decode(encoded)

    @contextmanager
    def damaged(self, key: str, scratch: Path):
        """One byte of the file flipped in place; the original, kept outside the repository (where
        pgBackRest would see it), is put back."""
        original = "/root/flaskstack-damaged-original"
        flip = shlex.join(["python3", "-c", FLIP_MIDDLE_BYTE, key])
        self.sandbox.ssh(self.host, f"sudo cp -p {key} {original} && sudo {flip}")
        try:
            yield
        finally:
            self.sandbox.ssh(self.host, f"sudo mv -f {original} {key}")


@pytest.fixture(scope="module")
def repository(sandbox):
    backup_hosts = sandbox.hosts_in("backup")
    return HostRepository(sandbox, backup_hosts[0]) if backup_hosts else BucketRepository(sandbox)


@pytest.fixture(scope="module")
def backup_runner(sandbox, db_host) -> dict:
    """The host whose timers take the base backups: the backup host, or the db host."""
    return (sandbox.hosts_in("backup") or [db_host])[0]


def make_backups(sandbox) -> subprocess.CompletedProcess:
    result = run_ops(sandbox, "backups.sh")
    print(result.stdout)
    return result


def test_the_first_deploy_took_a_full_backup_into_the_repository(sandbox, db_host, repository):
    result = make_backups(sandbox)
    assert result.returncode == 0, deploy_failure(result)
    assert f"stanza {STANZA} (aes-256-cbc, from {db_host['name']}): ok" in result.stdout
    assert re.search(r"^  \d{8}-\d{6}F\s+full\s", result.stdout, re.M), result.stdout
    assert "recovery window: " in result.stdout

    # The repository holds the backup's files and the archive, all encrypted at rest: pgBackRest's
    # aes-256-cbc files start with OpenSSL's "Salted__" header.
    backups = repository.keys("backup")
    wal = [key for key in repository.keys("archive") if "-" in key.rsplit("/", 1)[-1]]
    assert any(key.endswith("/backup.manifest") for key in backups), backups[:20]
    assert wal, "no WAL segment in the repository"
    for key in (repository.key("backup", "backup.info"), wal[-1]):
        assert repository.head(key, 8) == b"Salted__", key
    print(f"{repository.where}: {len(backups)} backup files, {len(wal)} WAL segments, "
          "all encrypted")  # fmt: skip


def test_a_write_reaches_the_repository_within_the_archive_timeout(
    sandbox, db_host, member, repository
):
    """The RPO of losing the db host: how long an acknowledged write lives only on its disk.
    Right after Postgres starts, too: its checkpointer, which forces the switch, would otherwise
    sleep until the first timed checkpoint (five minutes)."""
    sandbox.ssh(db_host, "sudo systemctl restart postgresql")
    time.sleep(3)
    post_id = create_post(sandbox, member, "Archived within the minute")
    acknowledged = time.monotonic()
    # The WAL segment holding the write (its commit is at or before the current insert position).
    segment = psql(sandbox, db_host, "postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")
    archived = None
    # The switch comes within archive_timeout; the upload and this poll take a few seconds more.
    while time.monotonic() - acknowledged < ARCHIVE_TIMEOUT + 20:
        last = psql(sandbox, db_host, "postgres", "SELECT last_archived_wal FROM pg_stat_archiver")
        # Segment names of one timeline sort in WAL order.
        if last and last[8:] >= segment[8:]:
            archived = time.monotonic() - acknowledged
            break
        time.sleep(1)
    assert archived is not None, f"segment {segment} (post {post_id}) not archived in time"
    assert any(key.split("/")[-1].startswith(segment) for key in repository.keys("archive")), (
        f"segment {segment} is not in the repository"
    )
    print(f"post {post_id}: its WAL segment {segment} was in the repository {archived:.0f} s later "
          f"(archive_timeout {ARCHIVE_TIMEOUT} s)")  # fmt: skip


def test_the_backup_timers_are_enabled_and_both_backups_run_even_when_due_at_once(
    sandbox, backup_runner
):
    """As after a host was off when both timers fired (both Persistent): the two units started
    together both succeed, the differential after the full one (it would fail on its lock)."""
    timers = sandbox.ssh(backup_runner, "systemctl is-enabled flaskstack-pgbackrest-full.timer "
                                        "flaskstack-pgbackrest-diff.timer")  # fmt: skip
    assert timers.stdout.split() == ["enabled", "enabled"]
    units = [f"flaskstack-pgbackrest-backup@{kind}.service" for kind in ("full", "diff")]
    started = sandbox.ssh(backup_runner, f"sudo systemctl start {' '.join(units)}", check=False)
    assert started.returncode == 0, started.stderr
    for unit in units:
        show = f"systemctl show -p Result --value {unit}"
        result = sandbox.ssh(backup_runner, show).stdout.strip()
        assert result == "success", unit
    result = make_backups(sandbox)
    assert result.returncode == 0
    full, diff = (
        re.findall(r"^  (\d{8}-\d{6}F)\s+full\s", result.stdout, re.M)[-1],
        re.findall(r"^  (\d{8}-\d{6}F)_\d{8}-\d{6}D\s+diff\s", result.stdout, re.M)[-1],
    )
    assert diff == full, result.stdout  # the differential is based on the full one just taken


def stored_comments(sandbox, host: dict, post_id: int) -> dict[int, str]:
    of_post = "SELECT id, body FROM comments WHERE post_id = {:d}"
    rows = psql(sandbox, host, DATABASE, of_post.format(post_id))
    pairs = (line.split("|", 1) for line in rows.splitlines() if line)
    return {int(comment_id): body for comment_id, body in pairs}


def utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def test_a_restore_from_the_repository_into_scratch_counts_every_table(sandbox, db_host):
    live = table_counts(sandbox, db_host, DATABASE)
    result = run_ops(sandbox, "restore.sh")
    print(result.stdout[result.stdout.rfind("restore of stanza") :])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "pgbackrest verify: the repository's backups and WAL are intact" in result.stdout
    restored = dict(re.findall(r"^public\.(\w+)\s+(\d+)\b", result.stdout, re.M))
    # Nothing writes meanwhile: the newest archived state is the live one.
    assert {table: int(rows) for table, rows in restored.items()} == live
    # The scratch cluster is gone, and the live one was never touched.
    assert sandbox.ssh(db_host, "sudo test -e /var/lib/postgresql/flaskstack-pitr-check",
                       check=False).returncode == 1  # fmt: skip


def test_the_weekly_restore_check_restores_the_newest_backup(sandbox, db_host):
    unit = "flaskstack-pitr-check"
    timer = sandbox.ssh(db_host, f"systemctl is-enabled {unit}.timer").stdout.strip()
    assert timer == "enabled"
    since = sandbox.ssh(db_host, "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    started = sandbox.ssh(db_host, f"sudo systemctl start {unit}.service", check=False)
    journal = sandbox.journal(db_host, f"{unit}.service", since)
    assert started.returncode == 0, journal[-3000:]
    assert "pgbackrest verify: the repository's backups and WAL are intact" in journal
    assert re.search(r"recovery stopping at restore point", journal), journal[-3000:]
    # The metrics' "last good restore check".
    marker = sandbox.ssh(db_host, "stat -c %Y /var/lib/flaskstack-pitr-check/last-success")
    assert abs(int(marker.stdout) - time.time()) < 300


def test_the_backups_figures_are_written_for_node_exporter(sandbox, db_host):
    """The file node_exporter's textfile collector reads, as its timer's unit writes it."""
    sandbox.ssh(db_host, "sudo systemctl start flaskstack-backup-metrics.service")
    text = sandbox.ssh(db_host, "cat /var/lib/prometheus/node-exporter/flaskstack_pgbackrest.prom")
    samples = {
        name: float(value)
        for name, value in re.findall(r"^flaskstack_pgbackrest_(\S+) (\S+)$", text.stdout, re.M)
    }
    stanza = f'stanza="{STANZA}"'
    assert samples[f"scrape_success{{{stanza}}}"] == 1, text.stdout
    assert samples[f"stanza_status{{{stanza}}}"] == 0
    assert samples[f'backups{{{stanza},type="full"}}'] >= 1
    assert samples[f'backups{{{stanza},type="diff"}}'] >= 1
    now = time.time()
    assert now - samples[f'last_backup_timestamp_seconds{{{stanza},type="full"}}'] < 86400
    assert now - samples[f"archiver_last_archived_timestamp_seconds{{{stanza}}}"] < 600
    assert now - samples[f"restore_check_last_success_timestamp_seconds{{{stanza}}}"] < 600
    assert samples[f"repository_size_bytes{{{stanza}}}"] > 1_000_000
    assert samples[f"archiver_failed_total{{{stanza}}}"] == 0


def test_a_damaged_repository_is_refused_and_fails_the_weekly_check(
    sandbox, db_host, repository, tmp_path
):
    """One WAL segment corrupted in the repository (a byte flipped, as a failing disk or a buggy
    store would): pgbackrest verify names it, `make restore` refuses both a scratch and a live
    restore and changes nothing, and the weekly check's unit fails. Then the segment is put back."""
    segment_name = re.compile(r"/[0-9A-F]{24}-[0-9a-f]{40}\.zst$")
    wal = [key for key in repository.keys("archive") if segment_name.search(key)]
    victim = max(wal, key=lambda key: key.rsplit("/", 1)[-1])  # the newest segment
    segment = victim.rsplit("/", 1)[-1]
    unit = "flaskstack-pitr-check.service"
    try:
        with repository.damaged(victim, tmp_path):
            for into in ("scratch", "live"):
                result = run_ops(sandbox, "restore.sh", INTO=into, CONFIRM=DATABASE)
                said = result.stdout + result.stderr
                assert result.returncode != 0, said[-3000:]
                assert "pgbackrest verify found a damaged repository, nothing was restored" in said
                assert segment in said, said[-3000:]
            # The live cluster was not touched: the site serves, archiving goes on.
            assert sandbox.curl("-o", "/dev/null", "-w", "%{http_code}",
                                f"{sandbox.url}/").stdout == "200"  # fmt: skip
            check = sandbox.ssh(db_host, f"sudo systemctl start {unit}", check=False)
            assert check.returncode != 0
            assert sandbox.ssh(db_host, f"systemctl is-failed {unit}").stdout.strip() == "failed"
    finally:
        sandbox.ssh(db_host, f"sudo systemctl reset-failed {unit}")
    print(f"damaged {segment}: refused by make restore (scratch and live), weekly check failed")


def test_a_time_without_its_zone_or_too_late_or_a_wrong_name_changes_nothing(sandbox, db_host):
    result = run_ops(sandbox, "restore.sh", TIME="2026-12-02 10:14:00")
    assert result.returncode != 0 and "needs its time zone" in result.stderr, result.stderr
    result = run_ops(sandbox, "restore.sh", INTO="live", CONFIRM="not-the-name")
    assert result.returncode != 0
    assert "is not the live database's name: nothing was changed" in result.stdout + result.stderr
    # Later than the newest write: recovery would stop short of it, so nothing is restored.
    result = run_ops(sandbox, "restore.sh", TIME=utc(time.time() + 3600))
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "is later than the newest write" in said, said[-3000:]
    assert sandbox.ssh(db_host, "systemctl is-active flaskstack-web.socket").stdout.strip() == (
        "active"
    )


def test_a_lost_disk_is_restored_from_the_repository_within_the_archive_timeout(
    sandbox, db_host, member, drills
):
    """Under a write load the db host loses its data directory (the cluster killed, the directory
    removed, unarchived WAL with it); the operator runs `make restore INTO=live`. RPO: how long
    before the loss the oldest missing acknowledged write was acknowledged; every write
    acknowledged more than archive_timeout before the loss must be back. RTO: from the loss to the
    first write that succeeds again."""
    post_id = create_post(sandbox, member, "Before the disk was lost")
    data_dir = psql(sandbox, db_host, "postgres", "SHOW data_directory")
    load = WriteLoad(sandbox.url, member.api, post_id, timeout=5).start()
    try:
        time.sleep(ARCHIVE_TIMEOUT + 15)  # writes older than the archive timeout at the loss
        loss_began = load.clock()
        sandbox.ssh(db_host, "sudo systemctl kill --signal=KILL 'postgresql@*-main.service' && "
                             f"sudo rm -rf {data_dir}")  # fmt: skip
        lost = load.clock()  # the cluster and its directory are gone
        result = run_ops(sandbox, "restore.sh", INTO="live", CONFIRM=DATABASE)
        wait_for_a_write(load, load.clock())
    finally:
        load.stop()
    print(result.stdout[result.stdout.rfind("restore of stanza") :])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "live cluster down, a standby or not the repository's" in result.stdout
    record_loss(
        sandbox, db_host, drills, load, post_id, loss_began, lost,
        drill="data directory lost under load; restore INTO=live (newest)",
        steps=f"make restore {result.seconds:.0f} s ({restore_steps(result.stdout)})",
    )  # fmt: skip
    assert make_backups(sandbox).returncode == 0  # archiving goes on from the restored cluster


def wait_for_a_write(load, since: float, seconds: float = 60) -> None:
    """Until a write begun after `since` succeeds (the writers may be waiting out a timeout),
    or `seconds` pass: record_loss says which."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and load.first_success_after(since) is None:
        time.sleep(0.5)
    time.sleep(1)


def record_loss(sandbox, db_host, drills, load, post_id, loss_began, lost, drill, steps) -> None:
    """What losing the db host's data cost the writers, in the drill table; fails when a write
    acknowledged more than archive_timeout before the loss is missing, or none succeeds after.
    RPO: how long before the loss the oldest missing acknowledged write was acknowledged. RTO:
    from the loss to the first write that succeeds again."""
    stored = stored_comments(sandbox, db_host, post_id)
    acked_before_loss = [w for w in load.acknowledged if w.started + w.seconds < loss_began]
    missing = [w for w in acked_before_loss if stored.get(w.comment_id) != w.body]
    oldest_missing = min((w.started + w.seconds for w in missing), default=None)
    rpo = 0.0 if oldest_missing is None else loss_began - oldest_missing
    rto = load.first_success_after(lost)
    drills.add_row({
        "drill": drill, "acked writes": f"{len(acked_before_loss)} before the loss",
        "missing": len(missing), "RPO": f"{rpo:.1f} s",
        "RTO": "-" if rto is None else f"{rto:.1f} s",
        "where the time went": f"{steps}, then the app's first write",
    })  # fmt: skip
    print(f"load: {load.summary()}")
    old_and_missing = [w for w in missing if w.started + w.seconds < loss_began - ARCHIVE_TIMEOUT]
    assert old_and_missing == [], old_and_missing[:3]
    cutoff = max((r.started for r in load.requests), default=0.0) - 20
    last = [r for r in load.requests if r.started > cutoff]
    assert rto is not None, (
        "no write succeeded after the restore; the last 20 s: "
        f"{Counter(f'{r.kind} {r.status}' for r in last)}"
    )
    # An outage answers 503 (or nginx's 502 while the app is stopped), never a 500: a database
    # without the app's tables (a new host before its restore) included.
    server_errors = {what: n for what, n in load.failures().items() if what.endswith(" 500")}
    assert server_errors == {}, server_errors


def test_an_operator_mistake_is_undone_to_the_second(sandbox, db_host, member, browser, drills):
    """All posts deleted at T under a write load; `make restore TIME=<T - 1 s> INTO=live` brings
    back every post and every write acknowledged before then, and nothing written after T."""
    post_id = create_post(sandbox, member, "Before the mistake")
    posts_before = set(psql(sandbox, db_host, DATABASE, "SELECT id FROM posts").split())
    with WriteLoad(sandbox.url, member.api, post_id) as load:
        time.sleep(4)
        # The hosts share this machine's clock (containers): one timeline for both.
        mistake_wall, mistake = time.time(), load.clock()
        # The lock keeps the writers' new comments out between the two deletes (their foreign
        # key would refuse the second); readers go on.
        mistake_sql = (
            "SET ROLE flaskstack; BEGIN; LOCK TABLE posts, comments IN EXCLUSIVE MODE;"
            " DELETE FROM comments; DELETE FROM posts; COMMIT"
        )
        psql(sandbox, db_host, DATABASE, mistake_sql)
        time.sleep(3)  # more writes follow (refused now: their post is gone)
    assert psql(sandbox, db_host, DATABASE, "SELECT count(*) FROM posts") == "0"
    target_wall, target = mistake_wall - 1, mistake - 1

    result = run_ops(sandbox, "restore.sh", TIME=utc(target_wall), INTO="live", CONFIRM=DATABASE)
    print(result.stdout[result.stdout.rfind("restore of stanza") :])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    posts_after = set(psql(sandbox, db_host, DATABASE, "SELECT id FROM posts").split())
    stored = stored_comments(sandbox, db_host, post_id)
    before = [w for w in load.acknowledged if w.started + w.seconds < target]
    missing = [w for w in before if stored.get(w.comment_id) != w.body]
    # A write that began after T committed after T: the restore must not hold it.
    late = [w for w in load.acknowledged if w.started > mistake and w.comment_id in stored]
    print(f"mistake at {utc(mistake_wall)}, restored to {utc(target_wall)} "
          f"in {result.seconds:.0f} s; posts {len(posts_before)} before, {len(posts_after)} after; "
          f"acknowledged comments before the target {len(before)}, in Postgres {len(stored)}, "
          f"missing {len(missing)}")  # fmt: skip
    drills.add_row({
        "drill": "all posts deleted; restore TIME=<1 s before> INTO=live",
        "acked writes": f"{len(before)} before the target", "missing": len(missing),
        "RPO": "-", "RTO": f"{result.seconds:.0f} s (make restore)",
        "where the time went": restore_steps(result.stdout),
    })  # fmt: skip
    assert posts_after == posts_before
    assert before and missing == [], missing[:3]
    assert late == []
    # The site serves the restored data again.
    page = browser.get(f"{sandbox.url}/posts/{post_id}", timeout=15)
    assert page.status_code == 200 and "Before the mistake" in page.text
    # A restore point of the state before the restore was archived, and archiving goes on.
    assert "restore point flaskstack-before-restore-" in result.stdout
    assert make_backups(sandbox).returncode == 0
