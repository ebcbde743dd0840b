#!/usr/bin/env bash
# `make bench`: the benchmark in a private network namespace, so that nginx, gunicorn, Postgres
# and Redis listen on the ports a deployment uses (80/443, 127.0.0.1:8000) without touching the
# machine's own. Arguments go to tools/bench/bench.py (--smoke, --output PATH).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo_dir/.venv/bin/python}"

[[ $EUID -eq 0 ]] || { echo "bench: needs root (network namespace, nginx)" >&2; exit 1; }
[[ -x "$python" ]] || { echo "bench: no virtualenv at $python (run: make venv)" >&2; exit 1; }
"$repo_dir/tools/apt-install.sh" "$repo_dir/tools/bench/debian-packages.txt"

# Built (once) before entering the namespace: it needs the mirrors.
hosts_python_layers="$("$repo_dir/tools/bench/hosts-python.sh")"

namespace="fsbench-$$"
cleanup() { ip netns delete "$namespace" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$namespace"
echo "bench: network namespace $namespace"
ip -n "$namespace" link set lo up

# bench.py stops every process it starts; the namespace goes with this script.
cd "$repo_dir"
ip netns exec "$namespace" "$python" -m tools.bench.bench \
  --hosts-python-layers "$hosts_python_layers" "$@"
