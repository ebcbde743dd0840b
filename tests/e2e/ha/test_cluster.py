"""The high-availability data layer as deployed: a Patroni cluster over etcd with a synchronous
standby, a Redis master with a replica on every other data host and three Sentinels that agree
on it; every link between them encrypted and authenticated, and the control planes (etcd,
Patroni's REST API) closed to every host but the data hosts."""

from __future__ import annotations

from support.ports import accepting_ports

CONTROL_PORTS = {"etcd": 2379, "etcd peers": 2380, "patroni": 8008}


def test_patroni_runs_one_leader_a_synchronous_standby_and_a_replica(cluster):
    members = cluster.wait_for_members(3)
    roles = sorted(m["Role"] for m in members)
    assert roles == ["Leader", "Replica", "Sync Standby"], members
    leader = cluster.leader()
    # The leader's own view: one synchronous and one asynchronous walsender, both streaming.
    states = cluster.psql(leader, "SELECT sync_state FROM pg_stat_replication ORDER BY 1")
    assert states.split() == ["async", "sync"], states


def test_replication_and_app_connections_are_encrypted(cluster, sandbox, member):
    member.api.get(f"{sandbox.url}/api/v1/me", timeout=15)  # the app holds a connection now
    leader = cluster.leader()
    # Every network connection to the leader: the replicas' and the app hosts'.
    rows = cluster.psql(
        leader,
        "SELECT a.usename, s.ssl, s.version FROM pg_stat_activity a "
        "JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL ORDER BY 1",
    ).splitlines()
    users = {row.split("|")[0] for row in rows}
    assert {"replicator", "flaskstack"} <= users, rows
    assert all(row.split("|")[1] == "t" for row in rows), rows


def test_control_planes_are_closed_to_every_host_but_the_data_hosts(cluster, sandbox):
    ports = set(CONTROL_PORTS.values())
    target = cluster.data_hosts[0]
    for source in [*sandbox.hosts_in("app"), *sandbox.hosts_in("edge"), None]:
        assert accepting_ports(sandbox, source, target["ip"], ports) == set(), source
    assert accepting_ports(sandbox, cluster.data_hosts[1], target["ip"], ports) == ports


def test_patroni_api_refuses_a_client_without_a_member_certificate(cluster):
    # From a fellow data host (the firewall lets it through), but without a certificate.
    target = cluster.data_hosts[0]
    result = cluster.ask(
        f"curl -sS -o /dev/null -w '%{{http_code}}' --cacert /etc/flaskstack/cluster-tls/peers.crt "
        f"https://{target['ip']}:8008/cluster",
        avoid=(target["name"],),
        check=False,
    )
    assert result.returncode != 0, result.stdout  # the TLS handshake fails: no 200, no 401


def test_sentinels_agree_on_one_master_with_a_replica_on_every_other_data_host(cluster, sandbox):
    # Each data host's own Sentinel (the others avoided).
    names = [h["name"] for h in cluster.data_hosts]
    masters = {cluster.redis_master(avoid=tuple(n for n in names if n != name)) for name in names}
    assert len(masters) == 1, masters
    master = cluster.host_at(masters.pop())
    role = cluster.redis_role(master)
    kind, _offset, replicas = role
    assert kind == "master", role
    others = {h["ip"] for h in cluster.data_hosts if h["name"] != master["name"]}
    assert {replica[0] for replica in replicas} == others, role
