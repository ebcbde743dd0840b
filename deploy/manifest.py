"""The app's manifest, flaskstack.toml: how the stack builds and runs it (docs/app-contract.md).

Standard library only, so that every place that needs it reads it the same way: the release
build on the controller, gunicorn's settings and the commands on the hosts (the app's own
virtualenv), the image and the Ansible roles.

    manifest.py show [DIR]          the manifest with its defaults, as JSON (the roles read it)
    manifest.py get KEY [DIR]       one key of [app] (e.g. static), empty if unset; a list one
                                    item per line; `hooks`: the paths of the declared hooks
    manifest.py run KIND [DIR]      run the app's `build`, `migrate`, `worker` or `worker_check`
                                    command in DIR, its first word from DIR/.venv/bin when it is
                                    there; or its `pre-deploy` or `post-deploy` hook ([hooks])

DIR is the app's directory (or a release); default: the current directory.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

MANIFEST = "flaskstack.toml"

# What the app may declare under [app]; None: the app has no such step.
APP_KEYS: dict[str, Any] = {
    # Top-level paths of the app in a release (its lock and this manifest always are).
    "files": None,
    # gunicorn's WSGI entry point: "module:app" or a factory call, "module:create_app()".
    "wsgi": None,
    # A function ("module:function") gunicorn's master calls once before it forks workers; it
    # raises on a bad setting, so a bad .env stops the service with one line.
    "check": None,
    # One idempotent command that brings the database to the release's schema.
    "migrate": None,
    # A long-running background command (a queue worker).
    "worker": None,
    # A command that exits 0 when the worker of this host or container is healthy (e.g. its
    # heartbeat is recent): the Compose worker's healthcheck.
    "worker_check": None,
    # The directory, relative to the app's, that nginx serves at /static/.
    "static": None,
    # Run once per release at build time, in the release's tree (e.g. fingerprint static files).
    "build": None,
    # The app's own Prometheus metrics, which deploy/metrics.py serves beside the request
    # metrics: "module:name", a prometheus_client collector or a callable returning one.
    "metrics": None,
}
REQUIRED = ("files", "wsgi")
COMMANDS = ("build", "migrate", "worker", "worker_check")
# Executables the app ships, run by deploy/deploy.sh on the machine that deploys (like Kamal's):
# pre-deploy once the release is built and before any host is touched (failing stops the deploy),
# post-deploy once every host serves it.
HOOKS = ("pre-deploy", "post-deploy")
JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
WSGI = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\(\))?$")
CHECK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ManifestError(ValueError):
    """flaskstack.toml is missing, unreadable or says something the stack cannot run."""


def _relative_path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{what} must be a non-empty path")
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ManifestError(f"{what} must be a path inside the app's directory, not {value!r}")
    return path.as_posix()


def _command(value: object, what: str) -> str:
    if not isinstance(value, str) or not shlex.split(value):
        raise ManifestError(f"{what} must be a non-empty command")
    return value.strip()


def parse(data: dict[str, Any]) -> dict[str, Any]:
    """Check a parsed manifest and fill in its defaults."""
    unknown = set(data) - {"app", "scheduled", "hooks"}
    if unknown:
        raise ManifestError(f"unknown tables or keys: {', '.join(sorted(unknown))}")
    app = data.get("app")
    if not isinstance(app, dict):
        raise ManifestError("[app] is missing: it says how to run the app")
    unknown = set(app) - set(APP_KEYS)
    if unknown:
        raise ManifestError(f"[app] has unknown keys: {', '.join(sorted(unknown))}")
    missing = [key for key in REQUIRED if key not in app]
    if missing:
        raise ManifestError(f"[app] needs {', '.join(missing)}")

    result = dict(APP_KEYS) | app
    files = result["files"]
    if not isinstance(files, list) or not files:
        raise ManifestError("app.files must be a list of the app's top-level paths")
    result["files"] = [_relative_path(path, "each of app.files") for path in files]
    if not isinstance(result["wsgi"], str) or not WSGI.match(result["wsgi"]):
        raise ManifestError(
            'app.wsgi must look like "package.module:app" or "package:create_app()"'
        )
    for key, name in (("check", "function"), ("metrics", "collector")):
        value = result[key]
        if value is not None and not (isinstance(value, str) and CHECK.match(value)):
            raise ManifestError(f'app.{key} must look like "package.module:{name}"')
    for key in COMMANDS:
        if result[key] is not None:
            result[key] = _command(result[key], f"app.{key}")
    if result["worker_check"] is not None and result["worker"] is None:
        raise ManifestError("app.worker_check checks the worker: declare app.worker too")
    if result["static"] is not None:
        result["static"] = _relative_path(result["static"], "app.static")

    jobs = data.get("scheduled", [])
    if not isinstance(jobs, list):
        raise ManifestError("scheduled must be an array of tables ([[scheduled]])")
    names = set()
    for job in jobs:
        if not isinstance(job, dict) or set(job) != {"name", "command", "on_calendar"}:
            raise ManifestError(
                f"each [[scheduled]] job has a name, a command and an on_calendar: {job!r}"
            )
        if not isinstance(job["name"], str) or not JOB_NAME.match(job["name"]):
            raise ManifestError(
                f"scheduled job name {job['name']!r}: lowercase letters, digits, dashes"
            )
        if job["name"] in names:
            raise ManifestError(f"two scheduled jobs are named {job['name']!r}")
        names.add(job["name"])
        job["command"] = _command(job["command"], f"the command of job {job['name']}")
        if not isinstance(job["on_calendar"], str) or not job["on_calendar"].strip():
            raise ManifestError(f"job {job['name']} needs an on_calendar (systemd.time(7))")
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict) or set(hooks) - set(HOOKS):
        raise ManifestError(f"[hooks] may name {' and '.join(HOOKS)}, each an executable's path")
    hooks = {name: _relative_path(hooks[name], f"hooks.{name}") if name in hooks else None
             for name in HOOKS}  # fmt: skip
    return {"app": result, "scheduled": jobs, "hooks": hooks}


def load(directory: str | os.PathLike[str] = ".") -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing: it says how the stack runs the app") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    try:
        return parse(data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def run(kind: str, directory: Path) -> int:
    """exec the app's command or hook of this kind in the directory; 0 at once if it declares
    none."""
    manifest = load(directory)
    if kind in HOOKS:
        hook = manifest["hooks"][kind]
        if hook is None:
            return 0
        os.chdir(directory)
        os.execv(hook, [hook])  # noqa: S606 - the app's own hook
    command = manifest["app"][kind]
    if command is None:
        print(f"flaskstack: the app declares no {kind} command", file=sys.stderr)
        return 0
    argv = shlex.split(command)
    venv_bin = directory.resolve() / ".venv" / "bin"
    if (venv_bin / argv[0]).exists():
        argv[0] = str(venv_bin / argv[0])
    os.chdir(directory)
    os.execvp(argv[0], argv)  # noqa: S606 - the app's own declared command, not user input


def main(argv: list[str]) -> int:
    action, rest = (argv[0], argv[1:]) if argv else ("", [])
    wanted = {"show": 0, "get": 1, "run": 1}
    if action not in wanted or len(rest) not in (wanted[action], wanted[action] + 1):
        print(__doc__, file=sys.stderr)
        return 2
    key, directory = (rest[0], rest[1:]) if wanted[action] else (None, rest)
    directory = Path(directory[0] if directory else ".")
    try:
        if action == "run":
            if key not in COMMANDS + HOOKS:
                print(f"manifest.py run: one of {', '.join(COMMANDS + HOOKS)}", file=sys.stderr)
                return 2
            return run(key, directory)
        manifest = load(directory)
    except ManifestError as exc:
        print(f"flaskstack: {exc}", file=sys.stderr)
        return 1
    if action == "show":
        print(json.dumps(manifest, indent=2))
        return 0
    if key not in (*APP_KEYS, "hooks"):
        print(f"manifest.py get: one of {', '.join(APP_KEYS)}, hooks", file=sys.stderr)
        return 2
    # hooks: the paths of the hooks the app declares.
    value = [p for p in manifest["hooks"].values() if p] if key == "hooks" else manifest["app"][key]
    if isinstance(value, list):
        print("".join(f"{item}\n" for item in value), end="")
    else:
        print(value or "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
