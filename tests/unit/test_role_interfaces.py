"""Every role declares its inputs, and every setting has one home.

Ansible checks a role's inputs against meta/argument_specs.yml before the role's first task,
for the entry point being run: main, or the tasks_from file's name without .yml (with .yml it
finds no spec and checks nothing). The specs are only as good as their coverage, which these
tests keep: every default declared (with the same default), every entry point the playbooks use
specified, no setting defined twice, none in the playbooks' group_vars, where an inventory could
not override it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
ROLES = sorted(path.parent.parent for path in ANSIBLE.glob("roles/*/meta/main.yml"))
PLAYBOOK_GROUP_VARS = ANSIBLE / "group_vars/all.yml"
# Roles whose inputs are all their own: no setting of roles/flaskstack.
INDEPENDENT = {"flaskstack", "deploy_lock"}


def load(path: Path):
    return yaml.safe_load(path.read_text()) if path.exists() else None


def defaults(role: Path) -> dict:
    return load(role / "defaults/main.yml") or {}


def specs(role: Path) -> dict:
    return (load(role / "meta/argument_specs.yml") or {}).get("argument_specs", {})


def declared(role: Path) -> dict:
    """Every option of every entry point (the same option's declarations are anchors: equal)."""
    return {name: spec for entry in specs(role).values() for name, spec in entry["options"].items()}


def role_calls(node):
    """The arguments of every import_role and include_role in a playbook or tasks file."""
    if isinstance(node, list):
        for item in node:
            yield from role_calls(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key.rpartition(".")[2] in ("import_role", "include_role"):
                yield value
            else:
                yield from role_calls(value)


def entry_points_used() -> set[tuple[str, str]]:
    """(role, entry point) for every tasks_from in the playbooks and the roles."""
    sources = [*ANSIBLE.glob("*.yml"), *ANSIBLE.glob("roles/*/tasks/*.yml")]
    return {
        (call["name"], call["tasks_from"])
        for path in sources
        for call in role_calls(load(path))
        if "tasks_from" in call
    }


def templated(value) -> bool:
    """Derived from other variables: a template, or a list or dict that holds one."""
    if isinstance(value, dict):
        return any(templated(item) for item in value.values())
    if isinstance(value, list):
        return any(templated(item) for item in value)
    return isinstance(value, str) and "{{" in value


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_every_default_is_declared_with_the_same_default(role):
    spec = declared(role)
    undeclared = sorted(set(defaults(role)) - set(spec))
    assert not undeclared, f"{role.name}: declare these in meta/argument_specs.yml: {undeclared}"
    for name, value in defaults(role).items():
        if templated(value):
            assert "default" not in spec[name], f"{role.name}: {name}'s default is derived"
        else:
            assert spec[name].get("default", "missing") == value, f"{role.name}: {name}"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_a_declared_default_is_the_role_default(role):
    extra = sorted(
        name
        for name, spec in declared(role).items()
        if "default" in spec and name not in defaults(role)
    )
    assert not extra, f"{role.name}: a default in the spec only, not in defaults/main.yml: {extra}"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_every_entry_point_is_specified(role):
    entry_points = set(specs(role))
    if (role / "tasks/main.yml").exists() or role.name == "flaskstack":
        assert "main" in entry_points
    used = {entry for name, entry in entry_points_used() if name == role.name}
    assert used <= entry_points, f"{role.name}: no argument spec for {sorted(used - entry_points)}"
    for entry in entry_points - {"main"}:
        assert (role / f"tasks/{entry}.yml").exists(), f"{role.name}: {entry} has no tasks file"


def test_tasks_from_names_an_entry_point_not_a_file():
    # With .yml, Ansible looks for an entry point "release.yml", finds none, and checks nothing.
    assert entry_points_used(), "the pattern no longer finds the playbooks' tasks_from"
    assert not [entry for _, entry in entry_points_used() if entry.endswith((".yml", ".yaml"))]


def test_secrets_are_declared_no_log():
    secrets = {
        f"{role.name}: {name}"
        for role in ROLES
        for name, spec in declared(role).items()
        if re.search(r"password|secret", name) and not spec.get("no_log")
    }
    assert not secrets


def test_no_setting_has_two_homes():
    homes: dict[str, list[str]] = {}
    for role in ROLES:
        for name in set(defaults(role)) | set(declared(role)):
            homes.setdefault(name, []).append(role.name)
    assert not {name: roles for name, roles in homes.items() if len(roles) > 1}


def test_the_playbooks_group_vars_hold_no_setting():
    # It outranks an inventory's group_vars/all: a setting kept there could not be overridden.
    settings = {name for role in ROLES for name in set(defaults(role)) | set(declared(role))}
    assert not sorted(settings & set(load(PLAYBOOK_GROUP_VARS)))


@pytest.mark.parametrize("role", [role for role in ROLES if role.name not in INDEPENDENT], ids=str)
def test_roles_get_the_shared_settings_from_a_dependency(role):
    dependencies = load(role / "meta/main.yml").get("dependencies") or []
    names = [item["role"] if isinstance(item, dict) else item for item in dependencies]
    assert "flaskstack" in names
