"""Backups in the Compose stack: WAL archiving and base backups with pgBackRest into the
repository volume, encrypted, and the README's restore after a lost data volume, to a point in
time. Runs after test_stack.py (run.sh orders them): the drill stops and restarts the stack.
"""

from __future__ import annotations

import secrets
import subprocess
import time

from support.forms import register, submit
from support.https import https_client


def new_browser(stack):
    """Another user's browser: a fresh HTTPS client that trusts only Pebble's root."""
    return https_client(stack.ca_cert, "flaskstack-compose-test")


def psql(stack, sql: str, **variables: object) -> str:
    """SQL as the postgres superuser over the container's socket (peer authentication); the
    variables are psql's (:'name' in the SQL quotes one as a literal)."""
    settings = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
    result = stack.compose(
        "exec", "-T", "--user", "postgres", "postgres",
        "psql", "-AtX", "-v", "ON_ERROR_STOP=1", *settings, "-d", "flaskstack", "-f", "-",
        input=sql,
    )  # fmt: skip
    return result.stdout.strip()


def test_the_first_full_backup_is_in_the_encrypted_repository(stack):
    listing = stack.compose("exec", "-T", "pgbackrest", "flaskstack-pgbackrest", "list").stdout
    print(listing)
    assert "status: ok" in listing and "full backup: " in listing, listing
    assert "cipher: aes-256-cbc" in listing
    # pgBackRest's aes-256-cbc files start with OpenSSL's "Salted__" header.
    info = "/var/lib/pgbackrest/backup/flaskstack/backup.info"
    header = stack.compose("exec", "-T", "pgbackrest", "head", "-c", "8", info).stdout
    assert header == "Salted__"
    health = stack.compose("exec", "-T", "pgbackrest", "flaskstack-pgbackrest", "health").stdout
    assert "last backup attempt: ok" in health, health


def release_started_at(stack) -> str:
    """When the release service (migrations, static files) last started; it has exited since."""
    container = stack.compose("ps", "--all", "--quiet", "release").stdout.strip()
    inspect = [stack.docker, "inspect", "--format", "{{.State.StartedAt}}", container]
    return subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()


def archived(stack, segment: str, seconds: float = 60) -> bool:
    """Whether the WAL segment reaches the repository within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        last = psql(stack, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if last[8:] >= segment[8:]:  # segment names of one timeline sort in WAL order
            return True
        time.sleep(1)
    return False


def test_a_lost_data_volume_is_restored_to_a_point_in_time(stack, browser):
    """A post written, then the moment T, then an operator mistake (the post deleted) and another
    user registered; then the data volume is lost. The README's restore to T brings back the
    post and not what came after."""
    name, password = register(browser, stack.url, "pitr-")
    title = "Kept by the archive " + secrets.token_hex(4)
    created = submit(browser, f"{stack.url}/posts/new", title=title, body="Written before T.")
    assert created.status_code == 200 and title in created.text
    post_id = int(psql(stack, "SELECT max(id) FROM posts"))
    last_user = int(psql(stack, "SELECT max(id) FROM users"))
    target = psql(stack, "SELECT now()")  # T, in Postgres' clock and zone
    time.sleep(1.5)
    psql(stack, "DELETE FROM posts WHERE id = :'id'", id=post_id)  # the mistake
    late_name, _ = register(new_browser(stack), stack.url, "late-")
    segment = psql(stack, "SELECT pg_walfile_name(pg_switch_wal())")
    assert archived(stack, segment), f"segment {segment} was not archived within 60 s"

    # The disk is lost: Postgres and the pgbackrest service stop (the site answers 503), the
    # volume is gone (and the stopped containers that mount it, or Docker would keep it).
    released = release_started_at(stack)
    lost = time.monotonic()
    stack.compose("stop", "pgbackrest", "postgres")
    stack.compose("rm", "--force", "postgres", "pgbackrest")
    outage = new_browser(stack).get(stack.url + "/readyz", timeout=15)
    assert outage.status_code == 503, outage.text[:300]
    volume = f"{stack.project}_postgres-data"
    removed = subprocess.run([stack.docker, "volume", "rm", volume], capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr

    # The README's restore, then the stack started again.
    restore = stack.compose(
        "run", "--rm", "--no-deps", "pgbackrest", "restore", "--time", target,
        check=False, timeout=600,
    )  # fmt: skip
    print(restore.stdout + restore.stderr)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    restored = time.monotonic()
    up = stack.compose(
        "up", "--detach", "--wait", "--wait-timeout", "300", check=False, timeout=400
    )
    assert up.returncode == 0, up.stdout + up.stderr
    serving = time.monotonic()
    # The release service ran again: a schema restored from before a migration gets it.
    assert release_started_at(stack) > released

    assert psql(stack, "SELECT title FROM posts WHERE id = :'id'", id=post_id) == title
    later_users = psql(stack, "SELECT username FROM users WHERE id > :'id'", id=last_user)
    assert later_users == "", f"{late_name} registered after T, and is back: {later_users}"
    again = new_browser(stack)
    logged_in = submit(again, f"{stack.url}/login", username=name, password=password)
    assert logged_in.status_code == 200 and title in again.get(stack.url + "/", timeout=15).text
    # Archiving goes on from the restored cluster, and backups with it.
    segment = psql(stack, "SELECT pg_walfile_name(pg_switch_wal())")
    assert archived(stack, segment), f"segment {segment} was not archived after the restore"
    print(
        f"restored to {target}: the post back, the later user not; restore "
        f"{restored - lost:.0f} s, up --wait {serving - restored:.0f} s"
    )
