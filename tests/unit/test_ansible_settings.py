"""An inventory's group_vars/all overrides every setting, and what derives from it follows.

ansible/group_vars/all.yml is a playbook's group_vars: it outranks an inventory's group_vars/all,
so a setting kept there could not be overridden from it, and nothing would say so. Settings are
role defaults instead (those several roles share: roles/flaskstack). These tests run
ansible/settings.yml, which resolves each host's settings exactly as the deploy's plays do and
connects to no host, against throwaway inventories.
"""

from __future__ import annotations

import pytest
import yaml

from support.playbooks import ANSIBLE_DIR, run_playbook, write_inventory

SHOW = "Show the settings"
SECRETS = {
    "vault_flaskstack_secret_key": "secret-key-that-must-never-be-shown-0123456789",
    "vault_postgres_app_password": "postgres-password-never-shown",
    "vault_redis_app_password": "redis-password-never-shown",
    "vault_redis_admin_password": "redis-admin-password-never-shown",
}
SITE = {"site_domain": "example.test", "site_aliases": ["www.example.test"]}
SHARED = yaml.safe_load((ANSIBLE_DIR / "roles/flaskstack/defaults/main.yml").read_text())

# 1 edge, 2 app hosts (one on IPv6), 1 db/cache host, on a private network.
MULTI_HOSTS = {
    "edge1": {"ansible_host": "203.0.113.10", "private_address": "10.0.0.10"},
    "app1": {"ansible_host": "203.0.113.11", "private_address": "10.0.0.11"},
    "app2": {"ansible_host": "203.0.113.12", "private_address": "fd00::12"},
    "data1": {"ansible_host": "203.0.113.13", "private_address": "10.0.0.13"},
}
MULTI_GROUPS = {"edge": ["edge1"], "app": ["app1", "app2"], "db": ["data1"], "cache": ["data1"]}
# What the inventory's group_vars/all overrides: two shared settings, a role's own setting, and
# one setting the inventory's example already set; app2's host_vars override app_port again.
OVERRIDES = {
    "app_port": 8080,
    "postgres_port": 6543,
    "base_ssh_port": 2222,
    "acme_server": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    inventory = write_inventory(
        tmp_path_factory.mktemp("multi"),
        MULTI_GROUPS,
        MULTI_HOSTS,
        SITE | SECRETS | OVERRIDES,
        host_vars={"app2": {"app_port": 9090}},
    )
    run = run_playbook("settings.yml", inventory)
    assert run.returncode == 0, run.stderr
    return run


@pytest.fixture(scope="module")
def multi_settings(multi):
    return {host: result["msg"] for host, result in multi.task_results(SHOW).items()}


def test_every_host_is_shown(multi_settings):
    assert set(multi_settings) == set(MULTI_HOSTS)


def test_shared_settings_from_group_vars_all_reach_every_role(multi_settings):
    assert multi_settings["data1"]["db"]["port"] == 6543
    assert multi_settings["app1"]["app"]["listen"] == ["10.0.0.11:8080"]
    assert multi_settings["app1"]["app"]["database"] == "postgresql://10.0.0.13:6543/flaskstack"
    assert multi_settings["edge1"]["edge"]["acme_server"] == OVERRIDES["acme_server"]


def test_the_firewall_follows_the_overridden_ports(multi_settings):
    assert multi_settings["data1"]["firewall"]["private_tcp"] == [
        {"name": "postgres", "port": 6543, "sources": ["10.0.0.11", "fd00::12"]},
        {"name": "redis", "port": SHARED["redis_port"], "sources": ["10.0.0.11", "fd00::12"]},
    ]
    assert multi_settings["app1"]["firewall"]["private_tcp"] == [
        {"name": "gunicorn", "port": 8080, "sources": ["10.0.0.10"]}
    ]
    assert multi_settings["app1"]["firewall"]["public_tcp"] == [2222]
    assert multi_settings["edge1"]["firewall"]["public_tcp"] == [2222, 80, 443]


def test_host_vars_override_group_vars_all_also_for_the_other_hosts(multi_settings):
    # The edge reads app2's port through hostvars, which hold no role defaults.
    assert multi_settings["app2"]["app"]["listen"] == ["[fd00::12]:9090"]
    assert multi_settings["app2"]["firewall"]["private_tcp"][0]["port"] == 9090
    assert multi_settings["edge1"]["edge"]["upstream"] == ["10.0.0.11:8080", "[fd00::12]:9090"]


def test_no_secret_is_shown(multi):
    shown = yaml.safe_dump(multi.report)
    assert not [name for name, secret in SECRETS.items() if secret in shown]


def test_a_single_host_gets_the_shared_defaults(tmp_path):
    inventory = write_inventory(
        tmp_path,
        {group: ["web1"] for group in ("edge", "app", "db", "cache")},
        {"web1": {"ansible_host": "203.0.113.20"}},
        SITE | SECRETS,
    )
    run = run_playbook("settings.yml", inventory)
    assert run.returncode == 0, run.stderr
    web1 = run.task_results(SHOW)["web1"]["msg"]
    port, socket = SHARED["app_port"], SHARED["app_unix_socket"]
    assert web1["app"]["listen"] == [f"127.0.0.1:{port}", f"unix:{socket}"]
    assert web1["edge"]["upstream"] == [f"unix:{socket}"]
    assert web1["app"]["database"] == (
        f"postgresql://127.0.0.1:{SHARED['postgres_port']}/{SHARED['postgres_app_database']}"
    )
    assert web1["db"]["port"] == SHARED["postgres_port"]
    assert web1["cache"]["port"] == SHARED["redis_port"]
    assert web1["firewall"]["private_tcp"] == []
    assert web1["edge"]["certificates"] == ["example.test-ecdsa", "example.test-rsa"]


def test_a_backup_host_and_the_db_host_open_pgbackrest_to_each_other_only(tmp_path):
    inventory = write_inventory(
        tmp_path,
        {group: ["web1"] for group in ("edge", "app", "db", "cache")} | {"backup": ["vault1"]},
        {"web1": {"ansible_host": "203.0.113.20"}, "vault1": {"ansible_host": "203.0.113.30"}},
        SITE | SECRETS,
    )
    run = run_playbook("settings.yml", inventory)
    assert run.returncode == 0, run.stderr
    shown = run.task_results(SHOW)
    pgbackrest = {"name": "pgbackrest", "port": SHARED["pgbackrest_tls_port"]}
    assert shown["web1"]["msg"]["firewall"]["private_tcp"] == [
        pgbackrest | {"sources": ["203.0.113.30"]}
    ]
    assert shown["vault1"]["msg"]["firewall"]["private_tcp"] == [
        pgbackrest | {"sources": ["203.0.113.20"]}
    ]
    assert shown["vault1"]["msg"]["firewall"]["public_tcp"] == [22]


def test_a_wrong_setting_stops_before_any_task_naming_it(tmp_path):
    # One host per mistake: a wrong type and a wrong choice in its host_vars, a missing setting.
    wrong = {
        "type": ("postgres_port", {"postgres_port": "five-four-three-two"} | SITE),
        "choice": ("postgres_client_hba_type", {"postgres_client_hba_type": "trust"} | SITE),
        "missing": ("site_domain", {}),
    }
    inventory = write_inventory(
        tmp_path,
        {group: list(wrong) for group in ("edge", "app", "db", "cache")},
        {host: {"ansible_host": "203.0.113.20"} for host in wrong},
        SECRETS,
        host_vars={host: variables for host, (_, variables) in wrong.items()},
    )
    run = run_playbook("settings.yml", inventory)
    assert run.returncode != 0
    failures = run.failures()
    assert set(failures) == set(wrong), run.stderr
    for host, (named, _) in wrong.items():
        assert " : Validating arguments against arg spec " in failures[host], failures[host]
        assert named in failures[host], failures[host]
    assert not run.task_results(SHOW)


def test_the_exporters_open_to_the_monitor_host_only(tmp_path):
    inventory = write_inventory(
        tmp_path,
        {group: ["web1"] for group in ("edge", "app", "db", "cache")} | {"monitor": ["watch1"]},
        {"web1": {"ansible_host": "203.0.113.20"}, "watch1": {"ansible_host": "203.0.113.40"}},
        SITE | SECRETS,
    )
    run = run_playbook("settings.yml", inventory)
    assert run.returncode == 0, run.stderr
    shown = run.task_results(SHOW)
    web1 = {rule["name"]: rule for rule in shown["web1"]["msg"]["firewall"]["private_tcp"]}
    assert web1 == {
        name: {"name": name, "port": SHARED[port], "sources": ["203.0.113.40"]}
        for name, port in [
            ("node-exporter", "exporters_node_port"),
            ("postgres-exporter", "exporters_postgres_port"),
            ("redis-exporter", "exporters_redis_port"),
            ("nginx-exporter", "exporters_nginx_port"),
            ("mtail", "exporters_mtail_port"),
            ("app-metrics", "app_metrics_port"),
        ]
    }
    # The monitor host scrapes itself over loopback; it admits the hosts' journals.
    assert shown["watch1"]["msg"]["firewall"]["private_tcp"] == [
        {
            "name": "journal-remote",
            "port": SHARED["journal_remote_port"],
            "sources": ["203.0.113.20"],
        }
    ]
    assert shown["watch1"]["msg"]["firewall"]["public_tcp"] == [22]
