#!/bin/sh
# Create a virtualenv (or bring one up to date) and install a hash-pinned lock file into it,
# with the pinned pip of requirements-pip.txt, never with whatever pip the interpreter ships:
#
#   deploy/venv.sh VENV LOCK [PIP_ARGS…]
#
# Every Python install path uses it: `make venv`, the release and certbot virtualenvs on the
# hosts, the Docker builder and the install test. PYTHON names the interpreter that creates the
# virtualenv (default python3); PIP_LOCK the installer's lock (default: beside this script's
# parent, as in the repository and in a release). PIP_ARGS go to both installs (an index URL).
# POSIX sh: it also runs in slim images and on fresh hosts.
set -eu

[ $# -ge 2 ] || { echo "usage: $0 VENV LOCK [PIP_ARGS…]" >&2; exit 2; }
venv=$1
lock=$2
shift 2
python=${PYTHON:-python3}
pip_lock=${PIP_LOCK:-$(dirname "$0")/../requirements-pip.txt}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip() {
  "$venv/bin/python" -m pip --no-input --disable-pip-version-check "$@"
}
# The interpreter's own pip only ever installs this one hash-pinned wheel (no dependencies).
pip install --quiet --require-hashes --no-deps "$@" -r "$pip_lock"
pip install --quiet --require-hashes "$@" -r "$lock"
# ensurepip seeds setuptools too on Python < 3.12: keep only what the locks name.
grep -qi '^setuptools==' "$lock" || pip uninstall --quiet --yes setuptools 2>/dev/null
problems=$(pip check) || { echo "$problems" >&2; exit 1; }
