#!/usr/bin/env bash
# `make backups`: what the off-host pgBackRest repository holds, read from the first db host.
#
#   INVENTORY=ansible/inventories/production deploy/backups.sh [extra ansible-playbook args…]
#
# Prints each backup (type, start, duration, sizes), the newest WAL segment Postgres archived and
# its age, and the recovery window: the times `make restore TIME=…` can reach.
# INVENTORY (required); ANSIBLE_PLAYBOOK and the vault as for deploy/deploy.sh.
set -euo pipefail

ops_command=backups

# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"
require_inventory "make backups INVENTORY=ansible/inventories/<name>"
find_ansible_playbook

log_dir="$repo_dir/.build/backups/$inventory_slug"
umask 077
mkdir -p "$log_dir"
report="$log_dir/repository.json"
rm -f "$report"
echo "==> reading the backup repository from the first db host of $INVENTORY"
if ! "$ansible_playbook" -i "$INVENTORY" ansible/backups.yml -e "pgbackrest_report_file=$report" "$@" \
  >"$log_dir/backups.log" 2>&1; then
  sed -n 's/^.*\[ERROR\]: Task failed: \(Action failed: \)\{0,1\}//p' "$log_dir/backups.log" |
    tail -n 1 >&2
  die "could not read the repository; the full output is in ${log_dir#"$repo_dir"/}/backups.log"
fi
python3 deploy/backups_report.py "$report"
