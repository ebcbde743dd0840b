"""Backups that restore: the daily timer, retention, `make backup` under write load restored into
a scratch database, a live restore, and a damaged dump refused.

A backup is checked the only way that counts: by restoring it and comparing what came back with
what the manifest (counted in pg_dump's own snapshot) and the site's acknowledged writes say.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.load import WriteLoad

ROOT = Path(__file__).resolve().parents[2]
BACKUP_DIR = "/var/backups/flaskstack"  # the role's default (backup_dir)
SCRATCH = "flaskstack_restore_check"  # the role's default (backup_restore_check_database)
LOAD_BEFORE = 3  # seconds of writes before the backup starts
LOAD_AFTER = 2  # and after it ended


@pytest.fixture(scope="module")
def db_host(sandbox) -> dict:
    return sandbox.hosts_in("db")[0]


def psql(sandbox, host: dict, database: str, sql: str) -> str:
    options = "-X -q -A -t -v ON_ERROR_STOP=1"
    command = f"sudo -u postgres psql {options} -d {shlex.quote(database)} -c {shlex.quote(sql)}"
    return sandbox.ssh(host, command).stdout.strip()


def run_ops(sandbox, script: str, **env: str) -> subprocess.CompletedProcess:
    """deploy/backup.sh or deploy/restore.sh (make backup/restore) against the sandbox."""
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "deploy" / script)],
        env={**os.environ, "INVENTORY": str(ROOT / sandbox.spec["inventory"]), **env},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    result.seconds = time.monotonic() - started
    return result


# The dumps `make backup` copied to this machine during this module.
copied: list[Path] = []


def make_backup(sandbox) -> Path:
    """`make backup`: the path of the dump it copied to this machine."""
    result = run_ops(sandbox, "backup.sh")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    dump = ROOT / re.search(r"^backup: (\S+\.dump) ", result.stdout, re.M).group(1)
    assert dump.is_file() and dump.with_suffix(".json").is_file()
    print(f"make backup: {dump.name} in {result.seconds:.0f} s")
    copied.append(dump)
    return dump


def manifest_of(dump: Path) -> dict:
    return json.loads(dump.with_suffix(".json").read_text())


def table_counts(sandbox, host: dict, database: str) -> dict[str, int]:
    """Every table's rows, counted one by one (not with the tools' own query)."""
    tables = psql(
        sandbox, host, database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    ).split()
    count = 'SELECT count(*) FROM "{}"'
    return {t: int(psql(sandbox, host, database, count.format(t))) for t in tables}


def create_post(sandbox, member, title: str) -> int:
    post = member.api.post(
        f"{sandbox.url}/api/v1/posts", json={"title": title, "body": "Backups."}, timeout=15
    )
    assert post.status_code == 201, post.text
    return post.json()["id"]


def host_backups(sandbox, host: dict) -> list[str]:
    listing = sandbox.ssh(host, f"sudo ls -A {BACKUP_DIR}").stdout.split()
    return sorted(name for name in listing if not name.startswith("."))


def test_timer_is_enabled_and_the_service_takes_a_backup(sandbox, db_host):
    timer = sandbox.ssh(db_host, "systemctl is-enabled flaskstack-backup.timer; "
                                 "systemctl is-active flaskstack-backup.timer")  # fmt: skip
    assert timer.stdout.split() == ["enabled", "active"]
    next_run = sandbox.ssh(db_host, "systemctl list-timers --no-legend flaskstack-backup.timer")
    print(f"next run: {next_run.stdout.strip()}")

    before = set(host_backups(sandbox, db_host))
    started = sandbox.ssh(db_host, "sudo systemctl start flaskstack-backup.service", check=False)
    assert started.returncode == 0, started.stderr
    result = sandbox.ssh(db_host, "systemctl show -p Result --value flaskstack-backup.service")
    assert result.stdout.strip() == "success"
    new = sorted(set(host_backups(sandbox, db_host)) - before)
    assert len(new) == 2 and new[0].endswith(".dump") and new[1].endswith(".json"), new

    # Only postgres reads the backups; the manifest describes the dump beside it.
    mode = sandbox.ssh(db_host, f"sudo stat -c '%U %a' {BACKUP_DIR}").stdout.split()
    assert mode == ["postgres", "700"]
    manifest = json.loads(sandbox.ssh(db_host, f"sudo cat {BACKUP_DIR}/{new[1]}").stdout)
    sha256 = sandbox.ssh(db_host, f"sudo sha256sum {BACKUP_DIR}/{new[0]}").stdout.split()[0]
    assert manifest["sha256"] == sha256 and manifest["dump"] == new[0]
    assert {"users", "posts", "comments"} <= manifest["tables"].keys()
    print(f"timer run by hand: {new[0]}, {manifest['size']} bytes, tables {manifest['tables']}")


def test_retention_keeps_only_the_newest_backups(sandbox, db_host):
    # The keep count of one run (--keep) instead of the role's 14: no need to wait for days.
    names = []
    for _ in range(3):
        run = sandbox.ssh(db_host, "sudo flaskstack-backup --keep 2", check=False)
        assert run.returncode == 0, run.stderr
        names.append(re.search(r"/([^/]+)\.dump:", run.stdout).group(1))
    print(f"three runs with --keep 2: {names}; last said: {run.stdout.strip()}")
    kept = host_backups(sandbox, db_host)
    assert kept == sorted(f"{n}.{ext}" for n in names[1:] for ext in ("dump", "json")), kept
    # No temporary file is left, and a nonsensical count is refused with a reason.
    listing = sandbox.ssh(db_host, f"sudo ls -A {BACKUP_DIR}").stdout.split()
    assert [name for name in listing if "partial" in name] == []
    refused = sandbox.ssh(db_host, "sudo flaskstack-backup --keep 0", check=False)
    assert refused.returncode != 0 and "to keep must be 1 or more" in refused.stderr, refused.stderr
    assert host_backups(sandbox, db_host) == kept


def test_backup_under_write_load_restores_every_acknowledged_write(sandbox, db_host, member):
    post_id = create_post(sandbox, member, "Backup under load")
    with WriteLoad(sandbox.url, member.api, post_id) as load:
        time.sleep(LOAD_BEFORE)
        backup_began = load.clock()
        dump = make_backup(sandbox)
        backup_ended = load.clock()
        time.sleep(LOAD_AFTER)
    manifest = manifest_of(dump)
    live_after = int(psql(sandbox, db_host, "flaskstack", "SELECT count(*) FROM comments"))

    restore = run_ops(sandbox, "restore.sh", BACKUP=str(dump), KEEP="1")
    print(restore.stdout[restore.stdout.rfind("\n\n") :].strip())
    assert restore.returncode == 0, restore.stdout[-4000:] + restore.stderr[-2000:]
    try:
        restored = table_counts(sandbox, db_host, SCRATCH)
        comments_of_post = "SELECT id, body FROM comments WHERE post_id = {:d}"
        rows = psql(sandbox, db_host, SCRATCH, comments_of_post.format(post_id))
    finally:
        psql(sandbox, db_host, "postgres", f"DROP DATABASE IF EXISTS {SCRATCH}")
    stored = dict(line.split("|", 1) for line in rows.splitlines() if line)
    stored = {int(comment_id): body for comment_id, body in stored.items()}

    # Acknowledged (the 201 arrived) before `make backup` began: must be in the backup.
    before = [w for w in load.acknowledged if w.started + w.seconds < backup_began]
    after = [w for w in load.acknowledged if w.started > backup_ended]
    missing = [w for w in before if stored.get(w.comment_id) != w.body]
    print(f"load: {load.summary()}")
    print(f"acknowledged writes before the backup began: {len(before)}, "
          f"after it ended: {len(after)}, in the restored post: {len(stored)}")  # fmt: skip
    print(f"{'table':<16} {'manifest':>9} {'restored':>9}")
    for table in sorted(manifest["tables"].keys() | restored.keys()):
        print(f"{table:<16} {manifest['tables'].get(table, '-'):>9} {restored.get(table, '-'):>9}")
    print(f"comments in the live database after the load: {live_after}")
    print(f"make restore (scratch): {restore.seconds:.0f} s")

    assert restored == manifest["tables"]
    assert before and after, "the load did not span the backup"
    assert missing == [], f"{len(missing)} acknowledged writes missing, e.g. {missing[:3]}"
    assert manifest["tables"]["comments"] <= live_after
    assert load.failures() == {}, load.failures()


def test_live_restore_replaces_the_data_only_when_confirmed(sandbox, db_host, member, browser):
    post_id = create_post(sandbox, member, "Live restore")
    dump = make_backup(sandbox)
    database = manifest_of(dump)["database"]
    later = member.api.post(f"{sandbox.url}/api/v1/posts/{post_id}/comments",
                            json={"body": "Written after the backup."}, timeout=15)  # fmt: skip
    assert later.status_code == 201, later.text
    comment_url = f"{sandbox.url}/api/v1/comments/{later.json()['id']}"

    # A wrong name, or none from a script: refused before anything happens.
    for confirm in ("wrong", ""):
        refused = run_ops(sandbox, "restore.sh", BACKUP=str(dump), INTO="live", CONFIRM=confirm)
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output[-3000:]
        assert "nothing was changed" in output.lower(), output[-3000:]
        reason = next(line for line in output.splitlines() if "othing was changed" in line)
        print(f"CONFIRM={confirm!r} refused: {reason}")
        assert browser.get(comment_url, timeout=15).status_code == 200

    restore = run_ops(sandbox, "restore.sh", BACKUP=str(dump), INTO="live", CONFIRM=database)
    assert restore.returncode == 0, restore.stdout[-4000:] + restore.stderr[-2000:]
    print(restore.stdout[restore.stdout.rfind("\n\n") :].strip())
    print(f"make restore INTO=live: {restore.seconds:.0f} s")

    assert browser.get(comment_url, timeout=15).status_code == 404
    assert browser.get(f"{sandbox.url}/readyz", timeout=15).status_code == 200
    assert browser.get(f"{sandbox.url}/", timeout=15).status_code == 200
    assert browser.get(f"{sandbox.url}/posts/{post_id}", timeout=15).status_code == 200
    assert table_counts(sandbox, db_host, "flaskstack") == manifest_of(dump)["tables"]
    # The app's role still owns every table (the app migrates and writes as that role).
    owners_sql = "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
    owners = psql(sandbox, db_host, "flaskstack", owners_sql)
    assert owners.split() == [database]
    again = member.api.post(f"{sandbox.url}/api/v1/posts/{post_id}/comments",
                            json={"body": "Written after the restore."}, timeout=15)  # fmt: skip
    assert again.status_code == 201, again.text


def test_a_damaged_dump_is_refused_before_the_app_stops(sandbox, db_host, tmp_path):
    original = copied[-1] if copied else make_backup(sandbox)
    dump = tmp_path / original.name
    shutil.copy(original, dump)
    shutil.copy(original.with_suffix(".json"), dump.with_suffix(".json"))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    dump.write_bytes(data)
    web_before = sandbox.ssh(db_host, "systemctl show -p InvocationID --value flaskstack-web")

    refused = run_ops(sandbox, "restore.sh", BACKUP=str(dump), INTO="live",
                      CONFIRM=manifest_of(dump)["database"])  # fmt: skip
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output[-3000:]
    assert "does not match its manifest" in output, output[-3000:]
    assert "refusing to restore" in output and "Nothing was changed" in output
    print(next(line for line in output.splitlines() if line.startswith("restore: flaskstack")))
    web_after = sandbox.ssh(db_host, "systemctl show -p InvocationID --value flaskstack-web")
    assert web_after.stdout == web_before.stdout, "the app was stopped for a damaged dump"
    listing = sandbox.ssh(db_host, f"sudo ls -A {BACKUP_DIR}").stdout.split()
    leftovers = [name for name in listing if "restore" in name]
    assert leftovers == [], "the upload was not removed"
