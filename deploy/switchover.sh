#!/usr/bin/env bash
# `make switchover`: move a Patroni cluster's primary to another member, for maintenance.
#
#   INVENTORY=ansible/inventories/production deploy/switchover.sh [-e switchover_candidate=HOST]
#
# The candidate defaults to the synchronous standby. Prints the old and the new primary and the
# time it took. ANSIBLE_PLAYBOOK and the vault as for deploy/deploy.sh.
set -euo pipefail

ops_command=switchover

# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"
require_inventory "make switchover INVENTORY=ansible/inventories/<name> [CANDIDATE=host]"
find_ansible_playbook

log_dir="$repo_dir/.build/switchover/$inventory_slug"
mkdir -p "$log_dir"
started=$SECONDS
echo "==> switchover of the Patroni cluster of $INVENTORY"
status=0
"$ansible_playbook" -i "$INVENTORY" ansible/switchover.yml "$@" >"$log_dir/switchover.log" 2>&1 ||
  status=$?
if ((status != 0)); then
  sed -n 's/^.*\[ERROR\]: Task failed: \(Action failed: \)\{0,1\}//p; s/^ *msg: //p' \
    "$log_dir/switchover.log" | tail -n 3 >&2
  echo "switchover: FAILED after $((SECONDS - started)) s (log: $log_dir/switchover.log)" >&2
  exit "$status"
fi
summary="$(grep -o "switchover: the primary is now [^\"']*" "$log_dir/switchover.log" | tail -n 1)"
echo "${summary:-switchover: done} — $((SECONDS - started)) s (log: $log_dir/switchover.log)"
