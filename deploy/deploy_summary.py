"""The summary at the end of `make deploy`: URL, release, time, and per host its groups and counts.

Called by deploy/deploy.sh with the outputs of `ansible-inventory --graph` and `--list` and the
playbook's log. Standard library only: it runs with the machine's python3.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

STACK_GROUPS = ("edge", "app", "db", "cache", "backup", "monitor")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)
COUNTS = ("ok", "changed", "failed", "unreachable")
# A role tells the operator what to do next with a debug message that starts so.
ACTION_NEEDED = re.compile(r"Action needed: (.*?)(?:(?<!')'(?!')|\"|\n\s*\n|\n\S|\Z)", re.S)


def groups_by_host(graph: str) -> dict[str, list[str]]:
    """Parse `ansible-inventory --graph`: "  |--@app:" opens a group, "  |  |--h1" a member."""
    groups: dict[str, list[str]] = {}
    group_at_depth: dict[int, str] = {}
    for line in graph.splitlines():
        depth = line.find("|--")
        name = line[depth + 3 :].strip() if depth >= 0 else line.strip()
        if name.startswith("@"):
            group_at_depth[depth] = name[1:].rstrip(":")
        elif depth >= 0 and group_at_depth.get(depth - 3) in STACK_GROUPS:
            groups.setdefault(name, []).append(group_at_depth[depth - 3])
    return groups


def recap_by_host(log: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counts of each host, from the playbook's (possibly coloured) output."""
    recap = {}
    for line in log.splitlines():
        match = RECAP_LINE.match(ANSI_ESCAPE.sub("", line))
        if match:
            recap[match["host"]] = {name: int(match[name]) for name in COUNTS}
    return recap


def actions_needed(log: str) -> list[str]:
    """What the roles asked the operator to do ("Action needed: …" messages), once each."""
    found = []
    for match in ACTION_NEEDED.finditer(ANSI_ESCAPE.sub("", log)):
        text = " ".join(match.group(1).split()).replace("''", "'")
        if text not in found:
            found.append(text)
    return found


def site_domains(inventory: dict) -> list[str]:
    hostvars = inventory.get("_meta", {}).get("hostvars", {})
    return sorted(
        {v["site_domain"] for v in hostvars.values() if isinstance(v.get("site_domain"), str)}
    )


def render(args: argparse.Namespace) -> tuple[str, bool]:
    groups = groups_by_host(Path(args.graph).read_text() if Path(args.graph).exists() else "")
    log = Path(args.log).read_text(errors="replace")
    recap = recap_by_host(log)
    try:
        inventory = json.loads(Path(args.inventory).read_text())
    except (OSError, ValueError):
        inventory = {}
    minutes, seconds = divmod(args.seconds, 60)
    failed = args.status != 0 or any(c["failed"] or c["unreachable"] for c in recap.values())

    lines = ["", "==> summary"]
    lines += [f"  url:      https://{domain}/" for domain in site_domains(inventory)]
    lines += [f"  release:  {args.release}", f"  time:     {minutes}m{seconds:02d}s"]
    lines.append(
        f"  {'host':<28} {'groups':<22} {'ok':>4} {'changed':>8} {'failed':>7} {'unreach':>8}"
    )
    for host in sorted(set(groups) | set(recap)):
        counts = recap.get(host)
        cells = [str(counts[name]) if counts else "-" for name in COUNTS]
        lines.append(
            f"  {host:<28} {','.join(groups.get(host, [])):<22} {cells[0]:>4} {cells[1]:>8} "
            f"{cells[2]:>7} {cells[3]:>8}"
        )
    lines += [f"  action needed: {action}" for action in actions_needed(log)]
    lines.append(f"  result:   {f'FAILED (log: {args.log})' if failed else 'ok'}")
    return "\n".join(lines), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--graph", required=True, help="ansible-inventory --graph output")
    parser.add_argument("--inventory", required=True, help="ansible-inventory --list output")
    parser.add_argument("--log", required=True, help="the playbook's output")
    parser.add_argument("--release", required=True, help="the release deployed (or rolled back to)")
    parser.add_argument("--seconds", type=int, required=True, help="time the deploy took")
    parser.add_argument("--status", type=int, required=True, help="ansible-playbook's exit code")
    text, _failed = render(parser.parse_args())
    print(text)


if __name__ == "__main__":
    main()
