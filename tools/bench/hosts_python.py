"""The app on the hosts' Python: Debian 13's python3 and a virtualenv built from requirements.txt
by deploy/venv.sh, as the app role builds a release's, run in a chroot of the sandbox's Debian 13
root filesystem (tools/bench/hosts-python.sh builds the layer and bench.sh passes it in).

The chroot is an overlay of that layer with a writable layer in the bench's work directory,
which is mounted at its own path inside it: the release, the unix socket nginx connects to and
gunicorn's control socket are where the rest of the bench expects them. Postgres and Redis are
reached over loopback, which the chroot shares. The mounts are made in the mount namespace
`ip netns exec` gives the bench, and removed on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tools.bench.processes import run

# tools/bench/hosts-python.sh: where the virtualenv is inside the layer.
VENV = Path("/opt/flaskstack-bench/venv")
CHROOT = "/usr/sbin/chroot"  # a root's PATH has it, the bench's may not


@contextlib.contextmanager
def hosts_root(work: Path, lower_layers: str) -> Iterator[Path]:
    """A Debian 13 root with the hosts' Python, `work` mounted at its own path inside."""
    base = work / "hosts-root"
    root, upper, scratch = base / "root", base / "upper", base / "work"
    for directory in (root, upper, scratch):
        directory.mkdir(parents=True)
    options = f"lowerdir={lower_layers},upperdir={upper},workdir={scratch}"
    run("mount", "-t", "overlay", "flaskstack-bench-hosts", "-o", options, root)
    try:
        run("mount", "-t", "proc", "proc", root / "proc")
        run("mount", "--rbind", "/dev", root / "dev")  # with /dev/shm
        inside = root / work.relative_to("/")
        inside.mkdir(parents=True)
        run("mount", "--bind", work, inside)
        yield root
    finally:
        # Recursive and lazy: a bind of `work` inside `root` is below `work` too.
        run("umount", "--recursive", "--lazy", root)


def command(root: Path, cwd: Path, program: str, *args: str) -> list[str]:
    """`program` of the hosts' virtualenv, run in `root` with `cwd` (its path inside too)."""
    return [CHROOT, str(root), "env", f"--chdir={cwd}", str(VENV / "bin" / program), *args]


def path_inside() -> str:
    """PATH for a process in the root: the virtualenv first, as the systemd unit has it."""
    return f"{VENV / 'bin'}:/usr/bin:/bin"


def version(root: Path) -> str:
    """The interpreter's version, as `python3 -VV` prints it in the root."""
    return run(CHROOT, root, VENV / "bin/python", "-VV", capture_output=True).stdout.strip()
