"""Faults and operations under a steady load of real HTTPS writes and reads.

Each case runs a WriteLoad (comments created through the API, each read back, plus a logged-in
page that reads its session from Redis), does one thing to the running stack, and then checks:
which requests failed and how, that the site came back by itself, and that every write the API
acknowledged (201) is in Postgres, read there directly and not through the app. Every case adds
a row to the table printed at the end of the module (and written to .build/e2e/).

The cases run in this order on one sandbox: a new release is deployed, a broken one is refused
by the deploy gate, `make rollback` goes back to the first; then renewal, kills, restarts and a
reboot. The stack ends on the release it started with.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from support.faults import FaultTable
from support.load import WriteLoad

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_MIGRATIONS = ROOT / "tests" / "fixtures" / "migrations"
WRITERS = 4
# After the fault is over (the command that ends it has returned), the stack must serve every
# request started this many seconds later, without anyone intervening.
SETTLE = 5

# The units each group must have running and enabled at boot.
UNITS = {
    "edge": ["nginx.service", "flaskstack-cert-renewal.timer", "flaskstack-cert-expiry.timer"],
    "app": ["flaskstack-web.socket", "flaskstack-web.service", "flaskstack-worker.service"],
    "db": ["postgresql.service"],
    "cache": ["redis-server.service"],
    "backup": [
        "flaskstack-pgbackrest-server.service",
        "flaskstack-pgbackrest-full.timer",
        "flaskstack-pgbackrest-diff.timer",
    ],
    "monitor": [
        "systemd-journal-remote.socket",
        "prometheus.service",
        "prometheus-alertmanager.service",
        "prometheus-blackbox-exporter.service",
    ],
}
# With a monitor host: node_exporter on every host, and each group's exporter.
EXPORTER_UNITS = {
    "edge": ["prometheus-nginx-exporter.service", "mtail.service"],
    "app": ["flaskstack-metrics.service"],
    "db": ["prometheus-postgres-exporter.service"],
    "cache": ["prometheus-redis-exporter.service"],
}


# ---- the table ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(sandbox):
    table = FaultTable()
    yield table
    table.report(
        sandbox, "fault-injection suite (requests under load; failures by kind and status)"
    )


# ---- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def post_id(sandbox, member) -> int:
    post = member.api.post(
        f"{sandbox.url}/api/v1/posts",
        json={"title": "Faults", "body": "Comments written while things break."},
        timeout=15,
    )
    assert post.status_code == 201, post.text
    return post.json()["id"]


@pytest.fixture
def load(sandbox, member, post_id) -> WriteLoad:
    return WriteLoad(sandbox.url, member.api, post_id, writers=WRITERS, web=member.web)


def comments_in_postgres(sandbox, post_id: int) -> dict[int, str]:
    """The post's comments as Postgres has them, read on the db host with psql."""
    db = sandbox.hosts_in("db")[0]
    query = f"COPY (SELECT id, body FROM comments WHERE post_id = {int(post_id)}) TO STDOUT"  # noqa: S608
    result = sandbox.ssh(db, f"sudo -u postgres psql -X -q -d flaskstack -c '{query}'")
    rows = (line.split("\t", 1) for line in result.stdout.splitlines() if line)
    return {int(comment_id): body for comment_id, body in rows}


def check_writes(sandbox, load: WriteLoad) -> int:
    """Every acknowledged write is in Postgres, as written; returns how many were found."""
    assert load.acknowledged, "the load acknowledged no write at all"
    stored = comments_in_postgres(sandbox, load.post_id)
    missing = load.missing_from(stored)
    assert missing == [], f"{len(missing)} acknowledged writes missing or altered: {missing[:3]}"
    return len(load.acknowledged) - len(missing)


def check_back_after(load: WriteLoad, fault_ended: float) -> float:
    """After the fault, every request started SETTLE s later succeeded; returns how soon the
    first request succeeded again."""
    back = load.first_success_after(fault_ended)
    assert back is not None, "nothing succeeded after the fault"
    late = [r for r in load.requests if r.started >= fault_ended + SETTLE]
    assert late, "the load ended too soon after the fault"
    late_failures = [r for r in late if not r.ok]
    assert late_failures == [], f"still failing {SETTLE} s after the fault: {late_failures[:3]}"
    return back


# What `make deploy-app` adds to `make deploy`: the app's plays only, for a release shipped to
# hosts already provisioned.
APP_ONLY = ("--tags", "app")


def deploy(
    sandbox, *args: str, playbook: str = "ansible/site.yml", rollback_to: str = "", app: str = ""
):
    env = {**os.environ, "INVENTORY": str(ROOT / sandbox.spec["inventory"]), "PLAYBOOK": playbook}
    if rollback_to:
        env["ROLLBACK_RELEASE"] = rollback_to
    if app:
        env["APP"] = app  # another app than this repository's (deploy/build-release.sh)
    return subprocess.run(
        [str(ROOT / "deploy" / "deploy.sh"), *args],
        env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip


def deploy_failure(result: subprocess.CompletedProcess) -> str:
    """What a failed deploy says: each failing task with its error (the summary alone names only
    the hosts, and the next deploy overwrites the log), then the end of its output."""
    failures = []
    task = ""
    lines = result.stdout.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("fatal: ["):
            failures.append("\n".join([task, *lines[number : number + 12]]))
    return "\n\n".join([*failures[:4], result.stdout[-2000:] + result.stderr[-2000:]])


def live_release(sandbox) -> str:
    app = sandbox.hosts_in("app")[0]
    return sandbox.ssh(app, "readlink /srv/flaskstack/current").stdout.strip().rsplit("/", 1)[-1]


def deploy_records(sandbox) -> list[dict]:
    app = sandbox.hosts_in("app")[0]
    log = sandbox.ssh(app, "cat /srv/flaskstack/deploys.log").stdout
    return [json.loads(line) for line in log.splitlines() if line]


def build_variant(
    tmp_path: Path, marker: str, broken: bool = False, migrations: tuple[str, ...] = ()
) -> str:
    """A release built from a copy of this work tree with one visible change (a marker in every
    page's footer), broken (the WSGI module raises on import), and/or with migrations from
    tests/fixtures/migrations on top of the real history (the first one's parent is the real
    head). Returns the archive's path."""
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns(".venv", ".build", ".sandbox*", "node_modules", "__pycache__")
    shutil.copytree(ROOT, tree, ignore=ignore, symlinks=True)
    base = tree / "app" / "templates" / "base.html"
    base.write_text(base.read_text().replace("</footer>", f"<!-- {marker} --></footer>", 1))
    assert marker in base.read_text(), "the page template has no footer to mark"
    head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
    for migration in migrations:
        revision = (FIXTURE_MIGRATIONS / migration).read_text().replace('"HEAD"', f'"{head}"')
        (tree / "migrations" / "versions" / migration).write_text(revision)
        # A release holds the tracked files only: track it in the copy's index.
        subprocess.run(["git", "-C", str(tree), "add", f"migrations/versions/{migration}"],
                       check=True, capture_output=True)  # fmt: skip
    if broken:
        wsgi = tree / "app" / "wsgi.py"
        wsgi.write_text(wsgi.read_text() + '\nraise RuntimeError("a broken release")\n')
    built = subprocess.run(
        [str(tree / "deploy" / "build-release.sh")],
        env={**os.environ, "PYTHON": str(ROOT / ".venv" / "bin" / "python"),
             "RELEASES_DIR": str(ROOT / ".build" / "releases")},
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return built.stdout.strip().splitlines()[-1]


def home_page(sandbox, member) -> str:
    page = member.web.get(f"{sandbox.url}/", timeout=15)
    assert page.status_code == 200
    return page.text


# ---- releases ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def releases() -> dict[str, str]:
    """The releases the deploy cases move between: ids by name, filled as they go."""
    return {}


def test_deploying_a_new_release_fails_no_request(sandbox, member, load, table, releases,
                                                  tmp_path):  # fmt: skip
    """Release N+1 expands the schema (a nullable column, a new table, an index built
    concurrently) while N serves; N keeps serving on it until the switch."""
    releases["first"] = live_release(sandbox)
    marker = f"release-marker-{load.tag}"
    archive = build_variant(tmp_path, marker, migrations=("expand_release.py",))
    with load:
        result = deploy(sandbox, "-e", f"app_release_archive={archive}")
    assert result.returncode == 0, deploy_failure(result)
    table.add("deploy N+1 with an expand migration", load, check_writes(sandbox, load), None)
    assert load.failures() == {}, load.per_second()
    releases["second"] = live_release(sandbox)
    assert releases["second"] != releases["first"]
    assert marker in home_page(sandbox, member), "the new release does not serve the pages"
    record = deploy_records(sandbox)[-1]
    assert record["action"] == "deploy" and record["release"] == releases["second"]
    assert record["previous"] == releases["first"] and record["by"], record
    assert expanded_schema(sandbox) == ["f1x7re000004", "post_tags", "subtitle", "true"]


def expanded_schema(sandbox) -> list[str]:
    """What release N+1's migration left: the revision, the table, the column, a valid index."""
    db_host = sandbox.hosts_in("db")[0]
    query = (
        "SELECT version_num FROM alembic_version UNION ALL "
        "SELECT to_regclass('post_tags')::text UNION ALL "
        "SELECT column_name::text FROM information_schema.columns "
        "WHERE table_name = 'posts' AND column_name = 'subtitle' UNION ALL "
        "SELECT indisvalid::text FROM pg_index "
        "WHERE indexrelid = to_regclass('ix_posts_author_created')"
    )
    result = sandbox.ssh(
        db_host, f'sudo -u postgres psql -XAt -d flaskstack -c "{query}"', check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_release_that_fails_its_trial_is_never_switched_to(sandbox, load, table, releases,
                                                              tmp_path):  # fmt: skip
    archive = build_variant(tmp_path, f"broken-{load.tag}", broken=True)
    records_before = deploy_records(sandbox)
    with load:
        result = deploy(sandbox, *APP_ONLY, "-e", f"app_release_archive={archive}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, "a release that cannot start was deployed"
    assert "failed its trial" in output and "a broken release" in output, output[-3000:]
    label = "make deploy-app of a broken release (refused)"
    table.add(label, load, check_writes(sandbox, load), None)
    assert load.failures() == {}, load.per_second()
    assert live_release(sandbox) == releases["second"], "the live release changed"
    assert deploy_records(sandbox) == records_before, "a refused deploy was recorded as a switch"
    # The failed run gave the deploy lock back: the next deploy is not refused.
    app = sandbox.hosts_in("app")[0]
    assert sandbox.ssh(app, "test -e /run/flaskstack-deploy.lock", check=False).returncode == 1


def test_rollback_goes_back_to_the_previous_release_and_fails_no_request(
    sandbox, member, load, table, releases
):
    with load:
        result = deploy(sandbox, playbook="ansible/rollback.yml")
    assert result.returncode == 0, deploy_failure(result)
    table.add("make rollback to N, on N+1's schema", load, check_writes(sandbox, load), None)
    assert load.failures() == {}, load.per_second()
    assert live_release(sandbox) == releases["first"]
    # The database is not rolled back: release N serves on the expanded schema.
    assert expanded_schema(sandbox)[0] == "f1x7re000004"
    assert "release-marker-" not in home_page(sandbox, member)
    record = deploy_records(sandbox)[-1]
    assert record["action"] == "rollback" and record["previous"] == releases["second"], record
    listing = subprocess.run(
        ["make", "--no-print-directory", "releases", f"INVENTORY={sandbox.spec['inventory']}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stdout + listing.stderr
    lines = listing.stdout.splitlines()
    assert any(releases["first"] in line and "live" in line for line in lines), listing.stdout
    assert any(releases["second"] in line and "previous" in line for line in lines), listing.stdout


BULK_COMMENTS = 1_000_000
# Seconds of load before the heavy deploy: the baseline its latency is compared with.
BASELINE = 10


def psql(sandbox, sql: str, **variables) -> str:
    """Run SQL as postgres in the app's database on the db host, with psql variables (:name,
    :'name' in the SQL); returns its unaligned output."""
    db_host = sandbox.hosts_in("db")[0]
    assigned = " ".join(f"-v {name}={shlex.quote(str(value))}" for name, value in variables.items())
    command = f"sudo -u postgres psql -X -q -At -v ON_ERROR_STOP=1 {assigned} -d flaskstack"
    argv = sandbox.ssh_argv(db_host, command)
    result = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def watch_index_builds(sandbox, flag: str) -> subprocess.Popen:
    """On the db host, print the time (epoch) every 0.1 s while a CREATE INDEX CONCURRENTLY runs,
    until the flag file is removed (or 15 minutes pass)."""
    query = (
        "SELECT extract(epoch FROM clock_timestamp()) FROM pg_stat_activity "
        "WHERE query ILIKE 'CREATE INDEX CONCURRENTLY%' AND pid <> pg_backend_pid()"
    )
    loop = (
        f"touch {flag}; end=$(($(date +%s) + 900)); "
        f"while [ -e {flag} ] && [ $(date +%s) -lt $end ]; do "
        f'sudo -u postgres psql -XAt -d flaskstack -c "{query}"; sleep 0.1; done'
    )
    argv = sandbox.ssh_argv(sandbox.hosts_in("db")[0], loop)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def p99(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=100, method="inclusive")[98] if len(seconds) > 1 else 0


def test_a_heavy_migration_under_load_fails_no_request(sandbox, member, load, table, tmp_path):
    """Release N+2 builds an index concurrently on comments, the table the load writes to,
    filled to a million rows first: no request fails, and the latency during the build is
    printed beside the latency before it (no timing is asserted)."""
    bulk_post = psql(sandbox, """
        INSERT INTO posts (author_id, title, body, created_at)
        SELECT id, 'bulk', 'a million comments', now() FROM users WHERE username = :'username'
        RETURNING id;
        """, username=member.username).split()[0]  # fmt: skip
    try:
        psql(sandbox, """
            INSERT INTO comments (post_id, author_id, body, created_at)
            SELECT p.id, p.author_id, 'bulk comment ' || g, now() - g * interval '1 s'
            FROM posts p, generate_series(1, :rows) g WHERE p.id = :post;
            ANALYZE comments;
            """, post=bulk_post, rows=BULK_COMMENTS)  # fmt: skip
        archive = build_variant(tmp_path, f"heavy-{load.tag}",
                                migrations=("expand_release.py", "heavy_index.py"))  # fmt: skip
        flag = f"~/flaskstack-watch-{load.tag}"
        watcher = watch_index_builds(sandbox, flag)
        with load:
            time.sleep(BASELINE)
            deploy_started = load.clock()
            wall_offset = time.time() - load.clock()
            result = deploy(sandbox, *APP_ONLY, "-e", f"app_release_archive={archive}")
        sandbox.ssh(sandbox.hosts_in("db")[0], f"rm -f {flag}")
        seen, errors = watcher.communicate(timeout=60)
    finally:
        cleanup = "DELETE FROM comments WHERE post_id = :post; DELETE FROM posts WHERE id = :post;"
        psql(sandbox, cleanup + " VACUUM comments;", post=bulk_post)
    assert result.returncode == 0, deploy_failure(result)
    times = [float(line) - wall_offset for line in seen.split()]
    assert times, f"the index build was never seen running: {errors[-500:]}"
    built_from, built_to = min(times), max(times)
    before = [r.seconds for r in load.requests if r.ok and r.started < deploy_started]
    during = [r.seconds for r in load.requests if built_from <= r.started <= built_to]
    label = (
        f"index on {BULK_COMMENTS:,} comments: p99 {p99(before) * 1000:.0f} ms before, "
        f"{p99(during) * 1000:.0f} ms during ({len(during)} req, {built_to - built_from:.1f} s)"
    )
    table.add(label, load, check_writes(sandbox, load), None)
    assert load.failures() == {}, load.per_second()
    assert expanded_schema(sandbox)[0] == "f1x7re000005"


# ---- the edge ----------------------------------------------------------------------------------


def serial(sandbox) -> str:
    return sandbox.served_certificate().split("serial=", 1)[1].split()[0]


def test_certificate_renewal_and_nginx_reload_fail_no_request(sandbox, load, table):
    before = serial(sandbox)
    nginx_pid = "systemctl show -p MainPID --value nginx"
    pid = sandbox.ssh(sandbox.edge, nginx_pid).stdout.strip()
    with load:
        renewal = sandbox.ssh(sandbox.edge, "sudo flaskstack-certbot renew --force-renewal")
        deadline = time.monotonic() + 30
        while serial(sandbox) == before and time.monotonic() < deadline:
            time.sleep(1)
    table.add("renew certificates + nginx reload", load, check_writes(sandbox, load), None)
    assert "Congratulations" in renewal.stdout + renewal.stderr, renewal.stdout + renewal.stderr
    assert serial(sandbox) != before, "nginx still serves the old certificate"
    assert sandbox.ssh(sandbox.edge, nginx_pid).stdout.strip() == pid, "nginx was restarted"
    assert load.failures() == {}, load.per_second()


# ---- the app processes -------------------------------------------------------------------------

# How a request fails when the worker serving it is killed: a 502 from nginx if the worker had
# sent nothing yet, or the response cut off after its headers (nginx passes them on as they
# arrive, and can then only break the connection; requests calls that ChunkedEncodingError).
IN_FLIGHT_FAILURES = {
    f"{kind} {status}"
    for kind in ("write", "read", "page")
    for status in ("502", "ChunkedEncodingError")
}


def gunicorn_pids(sandbox, host) -> tuple[int, list[int]]:
    master = int(sandbox.ssh(host, "systemctl show -p MainPID --value flaskstack-web").stdout)
    # pgrep exits 1 when the master has no children; anything else is pgrep (or ssh) failing.
    children = sandbox.ssh(host, f"pgrep -P {master}", check=False)
    assert children.returncode in (0, 1), f"pgrep failed: {children.stderr}"
    return master, [int(pid) for pid in children.stdout.split()]


def test_kill_9_of_a_gunicorn_worker_fails_at_most_its_requests_in_flight(sandbox, load, table):
    app = sandbox.hosts_in("app")[0]
    master, workers = gunicorn_pids(sandbox, app)
    assert workers, "gunicorn has no workers"
    with load:
        time.sleep(2)
        killed_at = load.clock()
        sandbox.ssh(app, f"sudo kill -9 {workers[0]}")
        time.sleep(SETTLE + 3)
    back = check_back_after(load, killed_at)
    table.add("kill -9 a gunicorn worker", load, check_writes(sandbox, load), back)
    # Only the killed worker's request in flight can fail.
    assert set(load.failures()) <= IN_FLIGHT_FAILURES, load.failures()
    assert len(load.failed) <= 1, load.per_second()
    master_after, workers_after = gunicorn_pids(sandbox, app)
    assert master_after == master and len(workers_after) == len(workers)
    assert workers[0] not in workers_after


def test_kill_9_of_the_gunicorn_master_is_repaired_by_systemd(sandbox, load, table):
    app = sandbox.hosts_in("app")[0]
    master, workers = gunicorn_pids(sandbox, app)
    with load:
        time.sleep(2)
        killed_at = load.clock()
        sandbox.ssh(app, f"sudo kill -9 {master}")
        # systemd restarts the service (Restart=on-failure); its socket queues new connections.
        deadline = time.monotonic() + 60
        while gunicorn_pids(sandbox, app)[0] in (0, master) and time.monotonic() < deadline:
            time.sleep(0.5)
        restarted_at = load.clock()
        time.sleep(SETTLE + 3)
    back = check_back_after(load, restarted_at)
    table.add("kill -9 the gunicorn master", load, check_writes(sandbox, load), back)
    # systemd stops what is left of the unit before it restarts it: at most the workers'
    # requests in flight fail.
    assert set(load.failures()) <= IN_FLIGHT_FAILURES, load.failures()
    assert len(load.failed) <= len(workers), load.per_second()
    assert gunicorn_pids(sandbox, app)[0] not in (0, master)
    print(f"the master was replaced {restarted_at - killed_at:.1f} s after the kill")


# ---- Redis and Postgres ------------------------------------------------------------------------

OUTAGE = 4  # seconds a service stays stopped


@pytest.mark.parametrize(
    ("group", "unit"), [("cache", "redis-server"), ("db", "postgresql")], ids=["redis", "postgres"]
)
def test_a_data_service_outage_gives_only_fast_503s_and_recovers_by_itself(
    sandbox, load, table, group, unit
):
    host = sandbox.hosts_in(group)[0]
    with load:
        time.sleep(2)
        sandbox.ssh(host, f"sudo systemctl stop {unit}")
        time.sleep(OUTAGE)
        sandbox.ssh(host, f"sudo systemctl start {unit}")
        ended = load.clock()
        time.sleep(SETTLE + 3)
    back = check_back_after(load, ended)
    table.add(f"{unit} stopped {OUTAGE} s, started", load, check_writes(sandbox, load), back)
    # During the outage users get a clear 503 at once (never a 500, a 502 or a timeout).
    assert load.failed, f"stopping {unit} failed no request: is the load using it at all?"
    assert {r.status for r in load.failed} == {"503"}, load.failures()


# ---- the whole host ----------------------------------------------------------------------------


def test_a_reboot_brings_every_service_back_and_loses_no_write(sandbox, load, table, browser):
    with load:
        time.sleep(1)
        for host in sandbox.hosts:
            sandbox.cli("restart", host["name"])
        restarted = load.clock()
        deadline = time.monotonic() + 180
        while load.first_success_after(restarted) is None and time.monotonic() < deadline:
            time.sleep(1)
        back_at = load.clock()
        time.sleep(SETTLE + 3)
    back = check_back_after(load, back_at)
    table.add("reboot every host", load, check_writes(sandbox, load), back_at - restarted + back)
    for host in sandbox.hosts:
        units = [unit for group in host["groups"] for unit in UNITS[group]]
        if sandbox.hosts_in("monitor"):
            units += ["prometheus-node-exporter.service", "systemd-journal-upload.service"]
            units += [unit for group in host["groups"] for unit in EXPORTER_UNITS.get(group, [])]
        active = sandbox.ssh(host, "systemctl is-active " + " ".join(units), check=False)
        enabled = sandbox.ssh(host, "systemctl is-enabled " + " ".join(units), check=False)
        states = dict(zip(units, active.stdout.split(), strict=True))
        assert set(states.values()) == {"active"}, (host["name"], states)
        # One answer per unit: no output (ssh or systemctl failing) is not "all enabled".
        assert len(enabled.stdout.split()) == len(units), (host["name"], enabled)
        assert set(enabled.stdout.split()) <= {"enabled", "static"}, (host["name"], enabled.stdout)
    assert browser.get(sandbox.url + "/", timeout=10).status_code == 200
