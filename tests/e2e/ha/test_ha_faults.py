"""The HA topology's fault suite: each case breaks one part of the data layer under the usual
load (comments written through the API and read back, and a logged-in page that reads its
session from Redis), then checks what the issue asks of it, that every write the site
acknowledged is in Postgres (read there directly, on the primary), and that the cluster heals:
every member back, streaming from the primary. The table is printed at the end of the module
and again at the end of the stage.

Order: the cases that lose nothing first (an etcd member, a switchover, a rolling deploy, an
app host drained then powered off), then the primary's host powered off, the primary cut off
the network, the Redis master's host powered off, and last the active edge powered off.
"""

from __future__ import annotations

import itertools
import time

import pytest
from test_faults import APP_ONLY, build_variant, deploy, deploy_failure, live_release

from support.faults import FaultTable
from support.load import WriteLoad

WRITERS = 4
# Load before the fault and after the cluster has healed.
BEFORE = 5
AFTER = 5
# The bounds of the issue: writes back within 30 s of losing the primary's host (goal 15 s),
# requests back within 10 s of losing the Redis master's host.
PRIMARY_LOSS_BOUND = 30
REDIS_LOSS_BOUND = 10
# The bound of the issue: the site answers through another edge within 10 s of losing the
# active one.
EDGE_LOSS_BOUND = 10
# How long an etcd member stays down: several of Patroni's loops, long enough to matter if it did.
ETCD_LOSS_SECONDS = 15

COLUMNS = ("case", "requests", "failed", "acked writes", "in Postgres", "without writes",
           "back after", "holds")  # fmt: skip


@pytest.fixture(scope="module")
def table(sandbox):
    table = FaultTable(COLUMNS)
    yield table
    table.report(sandbox, "HA fault suite (requests under load; failures by kind and status)")


@pytest.fixture(scope="module")
def post_id(sandbox, member) -> int:
    post = member.api.post(
        f"{sandbox.url}/api/v1/posts",
        json={"title": "HA faults", "body": "Comments written while data hosts fail."},
        timeout=15,
    )
    assert post.status_code == 201, post.text
    return post.json()["id"]


@pytest.fixture
def load(sandbox, member, post_id) -> WriteLoad:
    return WriteLoad(sandbox.url, member.api, post_id, writers=WRITERS, web=member.web)


@pytest.fixture(autouse=True)
def healthy_before_and_after(cluster):
    """Every case starts and ends with the whole cluster up, whatever the previous one did."""
    cluster.wait_for_members(3)
    yield
    for host in cluster.data_hosts:
        cluster.sandbox.cli("heal", host["name"], check=False)
        cluster.sandbox.cli("start", host["name"], check=False)
    cluster.wait_for_members(3, seconds=180)


def comments_in_postgres(cluster, post_id: int) -> dict[int, str]:
    """The post's comments as the primary has them, read there with psql."""
    query = f"COPY (SELECT id, body FROM comments WHERE post_id = {int(post_id)}) TO STDOUT"  # noqa: S608
    leader = cluster.host(cluster.leader())
    result = cluster.sandbox.ssh(leader, f"sudo -u postgres psql -X -q -d flaskstack -c '{query}'")
    rows = (line.split("\t", 1) for line in result.stdout.splitlines() if line)
    return {int(comment_id): body for comment_id, body in rows}


def check_writes(cluster, load: WriteLoad) -> int:
    assert load.acknowledged, "the load acknowledged no write at all"
    stored = comments_in_postgres(cluster, load.post_id)
    missing = load.missing_from(stored)
    assert missing == [], f"{len(missing)} acknowledged writes missing or altered: {missing[:3]}"
    return len(load.acknowledged)


def longest_write_gap(load: WriteLoad, since: float) -> float:
    """The longest time from `since` on without an acknowledged write completing."""
    done = sorted(w.started + w.seconds for w in load.acknowledged)
    moments = [since, *(moment for moment in done if moment >= since)]
    return max((b - a for a, b in itertools.pairwise(moments)), default=0.0)


def first_write_after(load: WriteLoad, moment: float) -> float | None:
    """Seconds from `moment` until an acknowledged write that started after it completed."""
    done = [w.started + w.seconds for w in load.acknowledged if w.started >= moment]
    return min(done) - moment if done else None


def add_row(table, load, found, case, holds, without=None, back=None) -> None:
    failed = ", ".join(f"{n}× {what}" for what, n in sorted(load.failures().items()))
    table.add_row(
        {
            "case": case,
            "requests": len(load.requests),
            "failed": failed or "0",
            "acked writes": len(load.acknowledged),
            "in Postgres": found,
            "without writes": "-" if without is None else f"{without:.1f} s",
            "back after": "-" if back is None else f"{back:.1f} s",
            "holds": holds,
        }
    )


def logged_in(sandbox, member) -> bool:
    """Whether the member's browser session (in Redis) still opens a members-only page."""
    page = member.web.get(f"{sandbox.url}/settings/token", allow_redirects=False, timeout=15)
    return page.status_code == 200


# ---- the cases -----------------------------------------------------------------------------------


def test_losing_an_etcd_member_changes_nothing_for_requests(cluster, load, table):
    # A member on a replica's host: the leader's lock renewals go on with the two others.
    victim = next(m["Member"] for m in cluster.members() if m["Role"] != "Leader")
    with load:
        time.sleep(BEFORE)
        cluster.sandbox.ssh(cluster.host(victim), "sudo systemctl kill --signal=KILL etcd")
        cluster.sandbox.ssh(cluster.host(victim), "sudo systemctl stop etcd", check=False)
        time.sleep(ETCD_LOSS_SECONDS)
        leader = cluster.leader()
        cluster.sandbox.ssh(cluster.host(victim), "sudo systemctl start etcd")
        time.sleep(AFTER)
    found = check_writes(cluster, load)
    add_row(table, load, found, f"etcd member on {victim} killed", "0 failed requests")
    assert load.failed == [], load.failures()
    assert leader is not None


def test_switchover_under_load_fails_no_request(cluster, load, table, sandbox):
    leader_before = cluster.leader()
    with load:
        time.sleep(BEFORE)
        result = sandbox.make("switchover")
        print(result.stdout[-500:])
        time.sleep(AFTER)
    leader_after = cluster.leader()
    found = check_writes(cluster, load)
    add_row(
        table, load, found, f"make switchover ({leader_before} → {leader_after})",
        "0 failed requests", without=longest_write_gap(load, 0),
    )  # fmt: skip
    assert leader_after != leader_before
    assert load.failed == [], load.failures()


def test_rolling_deploy_under_load_fails_no_request(cluster, load, table, sandbox, tmp_path):
    before = live_release(sandbox)
    archive = build_variant(tmp_path, f"ha-release-{load.tag}")
    with load:
        time.sleep(BEFORE)
        result = deploy(sandbox, *APP_ONLY, "-e", f"app_release_archive={archive}")
        time.sleep(AFTER)
    assert result.returncode == 0, deploy_failure(result)
    found = check_writes(cluster, load)
    add_row(table, load, found, "make deploy-app of a new release (rolling)", "0 failed requests")
    assert live_release(sandbox) != before
    assert load.failed == [], load.failures()


def test_an_app_host_drained_then_powered_off_fails_no_request(cluster, load, table, sandbox):
    # The last app host: the first one also runs the scheduled jobs.
    victim_host = sandbox.hosts_in("app")[-1]
    victim = victim_host["name"]
    with load:
        time.sleep(BEFORE)
        print(sandbox.make("drain", f"HOST={victim}").stdout[-300:])
        sandbox.cli("kill", victim)
        time.sleep(BEFORE)
        sandbox.cli("start", victim)
        print(sandbox.make("undrain", f"HOST={victim}").stdout[-300:])
        time.sleep(AFTER)
    found = check_writes(cluster, load)
    served_by = requests_served_by(sandbox, victim_host)
    add_row(table, load, found, f"{victim} drained, powered off, back, undrained",
            "0 failed requests")  # fmt: skip
    assert load.failed == [], load.failures()
    assert served_by, f"{victim} serves no request after make undrain"


def requests_served_by(sandbox, host: dict, count: int = 20) -> int:
    """How many of `count` requests the app host answers (its name in X-Served-By; /healthz,
    which the microcache does not keep)."""
    name = sandbox.ssh(host, "hostname").stdout.strip()
    url = f"{sandbox.url}/healthz"
    answers = [
        sandbox.curl("-o", "/dev/null", "-w", "%header{x-served-by}", url).stdout.strip()
        for _ in range(count)
    ]
    return answers.count(name)


def test_primary_host_powered_off(cluster, load, table, sandbox):
    leader = cluster.leader()
    with load:
        time.sleep(BEFORE)
        cut = load.clock()
        sandbox.cli("kill", leader)
        dead = load.clock()
        new_leader = wait_for_new_leader(cluster, leader, avoid=(leader,))
        back = first_write_after(load, dead)
        deadline = time.monotonic() + PRIMARY_LOSS_BOUND + 10
        while back is None and time.monotonic() < deadline:
            time.sleep(0.5)
            back = first_write_after(load, dead)
        time.sleep(AFTER)
    without = longest_write_gap(load, cut - 1)
    sandbox.cli("start", leader)
    cluster.wait_for_members(3, seconds=180)
    cluster.wait_for_redis_replicas()
    found = check_writes(cluster, load)
    add_row(
        table, load, found, f"primary's host {leader} powered off ({new_leader} took over)",
        f"0 acked lost; writes back ≤ {PRIMARY_LOSS_BOUND} s", without=without, back=back,
    )  # fmt: skip
    assert back is not None and back <= PRIMARY_LOSS_BOUND, back
    print(f"seconds without writes: {without:.1f}")


def test_primary_cut_off_the_network_stops_taking_writes(cluster, load, table, sandbox):
    leader = cluster.leader()
    with load:
        time.sleep(BEFORE)
        cut = load.clock()
        sandbox.cli("partition", leader)
        isolated = load.clock()
        new_leader = wait_for_new_leader(cluster, leader, avoid=(leader,))
        # The isolated node, asked from inside (it has no network): no longer a primary.
        asked = load.clock()
        demoted = asked - isolated + wait_until_read_only(sandbox, leader)
        back = wait_for_a_write_after(load, isolated)
        time.sleep(AFTER)
        sandbox.cli("heal", leader)
    without = longest_write_gap(load, cut - 1)
    cluster.wait_for_members(3, seconds=180)
    found = check_writes(cluster, load)
    add_row(
        table, load, found, f"primary {leader} cut off ({new_leader} took over)",
        f"no split brain: {leader} took no writes after {demoted:.0f} s; 0 acked lost",
        without=without, back=back,
    )  # fmt: skip
    # The issue bounds the time without writes for a power cut; here it is printed, and writes
    # must have come back on the new primary.
    assert back is not None, "no write succeeded after the partition"


def test_redis_master_host_powered_off_logs_nobody_out(cluster, load, table, sandbox, member):
    assert logged_in(sandbox, member)
    master = cluster.host_at(cluster.redis_master())["name"]
    if cluster.leader() == master:
        # One failover at a time: the Postgres primary moves off the host first (no failed
        # request), so that the case measures Redis, not Patroni as well.
        print(sandbox.make("switchover").stdout[-300:])
        cluster.wait_for_members(3)
    with load:
        time.sleep(BEFORE)
        cut = load.clock()
        sandbox.cli("kill", master)
        dead = load.clock()
        new_master = wait_for_new_redis_master(cluster, master)
        time.sleep(REDIS_LOSS_BOUND + AFTER)
    sandbox.cli("start", master)
    cluster.wait_for_redis_replicas()
    back = load.first_success_after(dead)
    late = [r for r in load.requests if r.started >= dead + REDIS_LOSS_BOUND and not r.ok]
    still_logged_in = logged_in(sandbox, member)
    found = check_writes(cluster, load)
    add_row(
        table, load, found, f"Redis master's host {master} powered off ({new_master} took over)",
        f"nobody logged out; requests back ≤ {REDIS_LOSS_BOUND} s",
        without=longest_write_gap(load, cut - 1), back=back,
    )  # fmt: skip
    assert still_logged_in, "the member's session did not survive the failover"
    assert late == [], f"still failing {REDIS_LOSS_BOUND} s after the cut: {late[:3]}"


def test_active_edge_host_powered_off(cluster, load, table, sandbox):
    active = edge_holding_the_site_address(sandbox)
    with load:
        time.sleep(BEFORE)
        cut = load.clock()
        sandbox.cli("kill", active)
        dead = load.clock()
        deadline = time.monotonic() + EDGE_LOSS_BOUND + 20
        while load.first_success_after(dead) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(AFTER)
    back = load.first_success_after(dead)
    other = edge_holding_the_site_address(sandbox, avoid=(active,))
    sandbox.cli("start", active)
    found = check_writes(cluster, load)
    add_row(
        table, load, found, f"active edge {active} powered off ({other} took the address)",
        f"answers through the other edge ≤ {EDGE_LOSS_BOUND} s",
        without=longest_write_gap(load, cut - 1), back=back,
    )  # fmt: skip
    assert back is not None and back <= EDGE_LOSS_BOUND, back


def edge_holding_the_site_address(sandbox, avoid: tuple[str, ...] = ()) -> str:
    """The edge that has the floating address on an interface now."""
    holders = sandbox.edges_holding_the_site_ip(avoid)
    if not holders:
        pytest.fail(f"no edge (but {avoid}) holds the site's address {sandbox.site_ip}")
    return holders[0]["name"]


# ---- waiting -------------------------------------------------------------------------------------


def wait_for_new_leader(cluster, old: str, avoid: tuple[str, ...], seconds: int = 90) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            leader = cluster.leader(avoid=avoid)
        except Exception:  # noqa: BLE001 - a member may be busy taking over
            leader = None
        if leader and leader != old:
            return leader
        time.sleep(1)
    pytest.fail(f"no new leader within {seconds} s of losing {old}")


def wait_for_a_write_after(load: WriteLoad, moment: float, seconds: int = 60) -> float | None:
    """Seconds from `moment` to the first write begun after it that was acknowledged, waiting
    up to `seconds` for one; None if none came."""
    deadline = time.monotonic() + seconds
    while (back := first_write_after(load, moment)) is None and time.monotonic() < deadline:
        time.sleep(1)
    return back


def wait_until_read_only(sandbox, host: str, seconds: int = 60) -> float:
    """Seconds until the isolated server takes no more writes: it refuses sessions (Patroni is
    shutting it down to demote it; its archiver may hold the shutdown while the repository is
    out of reach) or says it is in recovery (it follows the new leader)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        result = sandbox.cli(
            "exec", host, "runuser", "-u", "postgres", "--",
            "psql", "-XAt", "-d", "postgres", "-c", "SELECT pg_is_in_recovery()",
            check=False, timeout=30,
        )  # fmt: skip
        refused = any(
            state in result.stderr
            for state in ("is shutting down", "is starting up", "No such file or directory")
        )
        if result.stdout.strip() == "t" or refused:
            return time.monotonic() - started
        time.sleep(1)
    pytest.fail(f"{host}, cut off, still takes writes after {seconds} s: a split brain")


def wait_for_new_redis_master(cluster, old: str, seconds: int = 60) -> str:
    deadline = time.monotonic() + seconds
    old_ip = cluster.host(old)["ip"]
    while time.monotonic() < deadline:
        try:
            address = cluster.redis_master(avoid=(old,))
        except Exception:  # noqa: BLE001
            address = old_ip
        if address != old_ip:
            return cluster.host_at(address)["name"]
        time.sleep(1)
    pytest.fail(f"the Sentinels did not replace the master on {old} within {seconds} s")
