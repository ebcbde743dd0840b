#!/usr/bin/env bash
# `make drain` / `make undrain`: take an app or edge host out of rotation, or put it back.
#
#   INVENTORY=ansible/inventories/production deploy/drain.sh drained|in_rotation HOST
#
# A drained app host gets no new request and is left once its requests in flight have ended; a
# drained edge gives up the floating address. It stays drained across deploys until undrained.
# ANSIBLE_PLAYBOOK and the vault as for deploy/deploy.sh.
set -euo pipefail

ops_command=drain

# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"
require_inventory "make drain|undrain INVENTORY=ansible/inventories/<name> HOST=host"
find_ansible_playbook

state="${1:-}"
host="${2:-}"
if [[ -z "$host" || ! "$state" =~ ^(drained|in_rotation)$ ]]; then
  echo "usage: make drain|undrain INVENTORY=… HOST=host" >&2
  exit 2
fi

log_dir="$repo_dir/.build/drain/$inventory_slug"
mkdir -p "$log_dir"
started=$SECONDS
echo "==> $([[ $state == drained ]] && echo drain || echo undrain) $host ($INVENTORY)"
status=0
"$ansible_playbook" -i "$INVENTORY" ansible/drain.yml -e "drain_host=$host" -e "drain_state=$state" \
  >"$log_dir/drain.log" 2>&1 || status=$?
if ((status != 0)); then
  sed -n 's/^.*\[ERROR\]: Task failed: \(Action failed: \)\{0,1\}//p; s/^ *msg: //p' \
    "$log_dir/drain.log" | tail -n 3 >&2
  echo "drain: FAILED after $((SECONDS - started)) s (log: $log_dir/drain.log)" >&2
  exit "$status"
fi
summary="$(grep -o "drain: $host is [^\"']*" "$log_dir/drain.log" | tail -n 1)"
echo "${summary:-drain: done} — $((SECONDS - started)) s (log: $log_dir/drain.log)"
