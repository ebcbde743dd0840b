"""Run a playbook of ansible/ against a throwaway inventory and read its results as JSON.

Only for playbooks whose tasks never reach a host (debug, validate_argument_spec: they run on
the controller), such as ansible/settings.yml: the inventories' hosts need not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"


@dataclass
class PlaybookRun:
    returncode: int
    report: dict
    stderr: str

    def task_results(self, name: str) -> dict[str, dict]:
        """Each host's result of the task with this name (the last one, if several)."""
        found: dict[str, dict] = {}
        for play in self.report.get("plays", []):
            for task in play["tasks"]:
                if task["task"]["name"] == name:
                    found.update(task["hosts"])
        return found

    def failures(self) -> dict[str, str]:
        """host → the message of the task that failed on it."""
        return {
            host: f"{task['task']['name']}: {result.get('msg', '')}"
            for play in self.report.get("plays", [])
            for task in play["tasks"]
            for host, result in task["hosts"].items()
            if result.get("failed")
        }


def write_inventory(
    directory: Path,
    groups: dict[str, list[str]],
    hosts: dict[str, dict],
    group_vars_all: dict,
    host_vars: dict[str, dict] | None = None,
) -> Path:
    """An inventory directory laid out as operators keep theirs: hosts.yml, group_vars/all/,
    host_vars/."""
    inventory = {
        "all": {
            "hosts": hosts,
            "children": {
                group: {"hosts": {name: {} for name in members}}
                for group, members in groups.items()
            },
        }
    }
    (directory / "group_vars/all").mkdir(parents=True)
    (directory / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (directory / "group_vars/all/vars.yml").write_text(yaml.safe_dump(group_vars_all))
    for host, variables in (host_vars or {}).items():
        (directory / "host_vars").mkdir(exist_ok=True)
        (directory / f"host_vars/{host}.yml").write_text(yaml.safe_dump(variables))
    return directory


def run_playbook(playbook: str, inventory: Path, *args: str, timeout: int = 120) -> PlaybookRun:
    """ansible-playbook from this interpreter's environment, with the project's ansible.cfg and
    the ansible.posix.json callback (and no other: its report is all of stdout)."""
    executable = Path(sys.executable).with_name("ansible-playbook")
    if not executable.exists():
        executable = Path(shutil.which("ansible-playbook") or "ansible-playbook")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env |= {
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(inventory / ".ansible-tmp"),
    }
    completed = subprocess.run(
        [str(executable), "-i", str(inventory), str(ANSIBLE_DIR / playbook), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        report = {}
    return PlaybookRun(completed.returncode, report, completed.stderr + completed.stdout[-2000:])
