"""Compare what a virtualenv holds with what a lock file says it must hold, for this interpreter.

    <venv>/bin/python installed_vs_lock.py LOCK [LOCK…]

Prints one JSON object: the packages missing, unexpected, or at another version than pinned
(their markers evaluated for the running interpreter). Exit status 0 only when they agree.
Runs inside the checked virtualenv with nothing but the standard library and pip's vendored
`packaging`: it is copied to the hosts as is.
"""

import json
import re
import sys
from importlib import metadata

from pip._vendor.packaging.markers import Marker
from pip._vendor.packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;([^\\]*))?")


def pins(lock_path: str) -> dict[str, str]:
    """The `name==version` lines of a lock whose markers hold for this interpreter."""
    wanted = {}
    with open(lock_path) as lock:
        for line in lock:
            match = PIN.match(line)
            if not match:
                continue
            name, version, marker = match.groups()
            if marker and not Marker(marker.strip()).evaluate():
                continue
            wanted[canonicalize_name(name)] = version
    return wanted


def main() -> int:
    wanted: dict[str, str] = {}
    for lock_path in sys.argv[1:]:
        wanted.update(pins(lock_path))
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    report = {
        "missing": sorted(f"{n}=={v}" for n, v in wanted.items() if n not in installed),
        "unexpected": sorted(f"{n}=={v}" for n, v in installed.items() if n not in wanted),
        "other_version": sorted(
            f"{n}: lock {v}, installed {installed[n]}"
            for n, v in wanted.items()
            if n in installed and installed[n] != v
        ),
        "python": sys.version.split()[0],
        "installed": len(installed),
    }
    print(json.dumps(report))
    return 1 if report["missing"] or report["unexpected"] or report["other_version"] else 0


if __name__ == "__main__":
    sys.exit(main())
