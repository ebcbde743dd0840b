"""The table at the end of `make audit`: per host, Lynis's hardening index and warnings, ssh-audit's
verdict on its sshd, and the stack's units that systemd-analyze rates above the bar.

Called by deploy/audit.sh once ansible/audit.yml has fetched each host's Lynis report and unit
ratings into --results/<host>/. It runs ssh-audit itself, from this machine, against each host's
address and SSH port as the inventory gives them. Writes --results/summary.json; exits 1 when a
host misses the bar, 0 when every host passes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ALGORITHM_KINDS = ("kex", "key", "enc", "mac")


def inventory_hosts(inventory: str, limit: str) -> dict[str, dict]:
    """Each host matching the limit (an Ansible host pattern): its address and SSH port, as
    Ansible would connect to it."""
    listing = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", inventory, "--limit", limit, "--list"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    hostvars = json.loads(listing.stdout)["_meta"]["hostvars"]
    return {
        name: {
            "address": host.get("ansible_host", name),
            "port": int(host.get("ansible_port", host.get("base_ssh_port", 22))),
        }
        for name, host in sorted(hostvars.items())
    }


def lynis_report(path: Path) -> dict:
    """The hardening index and warnings of a Lynis report (key=value lines, lists as key[]=)."""
    index, warnings = None, []
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key == "hardening_index":
            index = int(value)
        elif key == "warning[]":
            test, text = [*value.split("|"), "", ""][:2]
            warnings.append(f"{test}: {text}")
    return {"index": index, "warnings": warnings}


def unit_ratings(path: Path) -> dict[str, float | None]:
    ratings = {}
    for line in path.read_text().splitlines():
        unit, _, score = line.partition(" ")
        ratings[unit] = float(score) if score.strip() else None
    return ratings


def ssh_audit(address: str, port: int) -> dict:
    """ssh-audit's failures and warnings for one sshd. The connection rate test is skipped: it
    floods the server with handshakes, which is a load test, not an audit of its settings."""
    run = subprocess.run(
        [str(BIN / "ssh-audit"), "--json", "--skip-rate-test", "--timeout", "10",
         "--port", str(port), address],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        return {"error": (run.stdout + run.stderr).strip()[-300:], "fail": [], "warn": []}
    found: dict[str, list[str]] = {"fail": [], "warn": []}
    for kind in ALGORITHM_KINDS:
        for algorithm in report.get(kind, []):
            for level in found:
                for note in algorithm.get("notes", {}).get(level, []):
                    found[level].append(f"{kind} {algorithm['algorithm']}: {note}")
    for cve in report.get("cves", []):
        found["fail"].append(f"{cve.get('name')}: {cve.get('description', '')}")
    return {"error": None, **found}


def verdict(ssh: dict) -> str:
    if ssh["error"]:
        return "no answer"
    if ssh["fail"]:
        return f"{len(ssh['fail'])} fail"
    if ssh["warn"]:
        return f"{len(ssh['warn'])} warn"
    return "clean"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--limit", default="all")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--min-index", type=int, default=80)
    parser.add_argument("--max-exposure", type=float, default=2.5)
    args = parser.parse_args()

    hosts = {}
    for name, target in inventory_hosts(args.inventory, args.limit).items():
        lynis = lynis_report(args.results / name / "lynis-report.dat")
        units = unit_ratings(args.results / name / "units.txt")
        ssh = ssh_audit(target["address"], target["port"])
        exposed = {unit: score for unit, score in units.items()
                   if score is None or score > args.max_exposure}  # fmt: skip
        problems = [f"Lynis warning {warning}" for warning in lynis["warnings"]]
        if lynis["index"] is None or lynis["index"] < args.min_index:
            problems.append(f"Lynis hardening index {lynis['index']} < {args.min_index}")
        problems += [f"ssh-audit: {item}" for item in ssh["fail"] + ssh["warn"]]
        if ssh["error"]:
            problems.append(f"ssh-audit: {ssh['error']}")
        problems += [
            f"{unit} rated {score} > {args.max_exposure}" for unit, score in exposed.items()
        ]
        hosts[name] = {**target, "lynis": lynis, "ssh_audit": ssh, "units": units,
                       "exposed": exposed, "problems": problems}  # fmt: skip

    header = ("host", "Lynis index", "warnings", "ssh-audit", f"units > {args.max_exposure}")
    rows = [header] + [
        (name, str(host["lynis"]["index"]), str(len(host["lynis"]["warnings"])),
         verdict(host["ssh_audit"]), f"{len(host['exposed'])} of {len(host['units'])}")
        for name, host in hosts.items()
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    failing = {name: host["problems"] for name, host in hosts.items() if host["problems"]}
    for name, problems in failing.items():
        print(f"\n{name} misses the bar:")
        for problem in problems:
            print(f"  - {problem}")
    print("\naudit: " + (f"{len(failing)} of {len(hosts)} hosts miss the bar" if failing
                         else f"all {len(hosts)} hosts pass"))  # fmt: skip
    summary = {"min_index": args.min_index, "max_exposure": args.max_exposure, "hosts": hosts}
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
