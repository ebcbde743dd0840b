"""Which TCP ports of a sandbox host accept a connection, tried from another host or the probe."""

from __future__ import annotations

import shlex
import subprocess

# Prints each port that accepted a TCP connection within 1.5 seconds (a dropped SYN: no answer;
# on the sandbox bridge an open port answers in well under a millisecond).
PORT_CHECK = """
import socket, sys
for port in map(int, sys.argv[2:]):
    try:
        socket.create_connection((sys.argv[1], port), timeout=1.5).close()
        print(port)
    except OSError:
        pass
"""


def accepting_ports(sandbox, source: dict | None, target_ip: str, ports) -> set[int]:
    """The ports of target_ip that accept a connection from the source host (None: the probe)."""
    argv = ["python3", "-c", PORT_CHECK, target_ip, *map(str, ports)]
    if source is None:
        result = subprocess.run(
            ["ip", "netns", "exec", sandbox.probe_netns, *argv],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
    else:
        result = sandbox.ssh(source, shlex.join(argv), timeout=60)
    return {int(port) for port in result.stdout.split()}
