"""Every environment variable the stack reads has one home, and every path reaches it.

The variables are found by reading the sources (Python's AST, the shell script's expansions,
Compose's interpolations), not from a list kept here, so a setting added in one place only
fails this test. Defaults live in the code that reads a variable; .env-template documents each
variable once, empty, in the section named after the file that reads it; Compose and the
Ansible role pass the app's variables on without defaults of their own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / ".env-template"
COMPOSE = ROOT / "docker-compose.yml"
ROLE_ENV = ROOT / "ansible/roles/app/templates/env.j2"

# The app's processes: what each file reads is documented in the .env-template section that
# names the file, in this order (a variable two files read goes under the first).
APP_SOURCES = ("app/config.py", "deploy/gunicorn.conf.py", "deploy/docker-entrypoint.sh")

# The one place for variables that are read on one path only, and why. Everything else the app's
# processes read must be passed on by Compose (app, worker, release) and rendered by env.j2.
NOT_FROM_COMPOSE = {
    # nginx/upstream-compose.conf expects app:8000, which the image sets (Dockerfile ENV).
    "GUNICORN_BIND",
    # For a container run alone: Compose's release service migrates once per `up`.
    "RUN_MIGRATIONS",
}
NOT_FROM_ROLE = {
    # systemd's socket units hold the addresses (socket activation).
    "GUNICORN_BIND",
    # deploy/docker-entrypoint.sh runs in the image only: the role migrates in tasks/migrate.yml,
    # and systemd restarts the units until Postgres and Redis are there.
    "RUN_MIGRATIONS",
    "WAIT_FOR_SERVICES_TIMEOUT",
    # The web unit's Environment= (a directory of its RuntimeDirectory, emptied at each stop),
    # which the metrics unit shares; not the release's .env.
    "PROMETHEUS_MULTIPROC_DIR",
}

NAME = r"[A-Za-z_][A-Za-z0-9_]*"


# ---- what each source reads ----------------------------------------------------------------


def _is_environ(node: ast.expr) -> bool:
    """os.environ, or a mapping named env/environ that stands for it (app/config.py)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id in ("env", "environ")


def _string(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def python_reads(path: Path) -> set[str]:
    """Names in environ["X"], environ.get("X"), os.getenv("X") and helper(environ, "X", ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        keys: list[ast.expr] = []
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            keys = [node.slice]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault"):
                keys = node.args[:1] if _is_environ(func.value) else []
            elif getattr(func, "attr", getattr(func, "id", None)) == "getenv":
                keys = node.args[:1]
            elif len(node.args) >= 2 and _is_environ(node.args[0]):
                keys = node.args[1:2]  # such as _int(env, "SMTP_PORT", 25)
        names.update(name for name in map(_string, keys) if name)
    return names


def shell_reads(path: Path) -> set[str]:
    """Upper-case parameters the script expands but does not set itself."""
    code = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    expanded = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", code))
    assigned = re.findall(
        r"^\s*(?:(?:readonly|local|export|declare(?:\s+-\w+)*)\s+)?([A-Z_][A-Z0-9_]*)=",
        code,
        flags=re.MULTILINE,
    )
    return expanded - set(assigned)


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolations(text: str) -> list[tuple[str, str | None]]:
    """(name, default) of each ${NAME}, ${NAME:-default}, ${NAME:?error} and $NAME ($$ escapes)."""
    found = []
    for braced, operator, argument, bare in re.findall(
        rf"(?<!\$)\$(?:\{{({NAME})(?:(:?[-?+])([^}}]*))?\}}|({NAME}))", text
    ):
        default = argument if operator in ("-", ":-") else None
        found.append((braced or bare, default))
    return found


def compose_reads(path: Path = COMPOSE) -> set[str]:
    document = yaml.safe_load(path.read_text())
    return {name for text in _strings(document) for name, _ in interpolations(text)}


READERS = {
    "app/config.py": lambda: python_reads(ROOT / "app/config.py"),
    "deploy/gunicorn.conf.py": lambda: python_reads(ROOT / "deploy/gunicorn.conf.py"),
    "deploy/docker-entrypoint.sh": lambda: shell_reads(ROOT / "deploy/docker-entrypoint.sh"),
    "docker-compose.yml": compose_reads,
    "deploy/compose/pgbackrest-s3.yml": lambda: compose_reads(
        ROOT / "deploy/compose/pgbackrest-s3.yml"
    ),
}


def app_reads() -> set[str]:
    return set().union(*(READERS[source]() for source in APP_SOURCES))


# ---- what the template, Compose and the role say ---------------------------------------------


def template_sections() -> dict[str, dict[str, str]]:
    """{file named in a section's title: {variable: value}}, in the template's order."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in TEMPLATE.read_text().splitlines():
        if title := re.match(r"^# ---- .*\((.+)\) -+$", line):
            current = sections.setdefault(title[1], {})
        elif variable := re.match(rf"^({NAME})=(.*)$", line):
            assert current is not None, f"{variable[1]} comes before the first section"
            assert variable[1] not in current, f"{variable[1]} twice in .env-template"
            current[variable[1]] = variable[2]
    return sections


def role_renders() -> set[str]:
    return set(re.findall(r"^\s*'([A-Z_][A-Z0-9_]*)':", ROLE_ENV.read_text(), re.MULTILINE))


# ---- the checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", READERS)
def test_the_parsers_find_what_each_source_reads(source):
    assert READERS[source](), f"no environment variable found in {source}: parser out of date?"


def test_env_template_documents_each_variable_once_under_the_file_that_reads_it():
    sections = template_sections()
    assert list(sections) == list(READERS), "one section per reading file, in this order"
    seen: set[str] = set()
    for source, documented in sections.items():
        reads = READERS[source]() - seen
        assert set(documented) - reads == set(), f"documented under {source}, read by none"
        assert reads - set(documented) == set(), f"read by {source}, not in .env-template"
        seen |= reads
    everything = [name for documented in sections.values() for name in documented]
    assert len(everything) == len(set(everything)), "a variable documented twice"


def test_env_template_leaves_every_value_empty():
    """Defaults live in the code that reads a variable; secrets are generated by the user."""
    filled = {
        name: value
        for documented in template_sections().values()
        for name, value in documented.items()
        if value
    }
    assert filled == {}


@pytest.mark.parametrize("service", ["app", "worker", "release"])
def test_compose_passes_every_app_variable_on(service):
    environment = compose_file()["services"][service]["environment"]
    assert set(environment) == app_reads() - NOT_FROM_COMPOSE


def test_compose_invents_no_default_for_an_app_variable():
    """${NAME:-} or ${NAME:?…} for what the app reads: its default is the app's."""
    app = app_reads()
    invented = {
        (name, default)
        for text in _strings(compose_file())
        for name, default in interpolations(text)
        if name in app and default
    }
    assert invented == set()


def test_the_role_renders_every_app_variable_and_nothing_else():
    assert role_renders() == app_reads() - NOT_FROM_ROLE


def test_path_exceptions_name_variables_that_exist():
    assert (NOT_FROM_COMPOSE | NOT_FROM_ROLE) - app_reads() == set()


def test_only_app_config_reads_the_environment_in_the_app():
    """So app/config.py stays the one home of the app's defaults."""
    readers = {
        str(path.relative_to(ROOT)): names
        for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "migrations").rglob("*.py")]
        if path != ROOT / "app/config.py" and (names := python_reads(path))
    }
    assert readers == {}
