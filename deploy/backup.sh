#!/usr/bin/env bash
# `make backup`: take a backup now on the db host and copy it to this machine.
#
#   INVENTORY=ansible/inventories/production deploy/backup.sh [extra ansible-playbook args…]
#
# The backup is the one the daily timer takes (flaskstack-backup.service on the first db host:
# pg_dump with a manifest). Its dump and manifest land in backups/<inventory>/ (git-ignored, mode
# 0600), followed by a summary: file, size, row counts, seconds. `make restore BACKUP=…` checks it.
# INVENTORY (required); ANSIBLE_PLAYBOOK and the vault as for deploy/deploy.sh. Exits non-zero
# when the backup or the copy fails.
set -euo pipefail


ops_command=backup

# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"
require_inventory "make backup INVENTORY=ansible/inventories/<name>"
find_ansible_playbook

# Per inventory, named as deploy.sh names its logs (without a leading dot: no hidden directory).
local_dir="$repo_dir/backups/${inventory_slug#"${inventory_slug%%[!.]*}"}"
log_dir="$repo_dir/.build/backup/$inventory_slug"
# The dumps hold every user's data: readable by this user only.
umask 077
mkdir -p "$local_dir" "$log_dir"

# The names sort by time: a new backup is a new newest manifest.
newest_manifest() { find "$local_dir" -maxdepth 1 -name '*.json' | sort | tail -n 1; }
before="$(newest_manifest)"

started=$SECONDS
echo "==> backup on the db host of $INVENTORY, copied to ${local_dir#"$repo_dir"/}/"
status=0
"$ansible_playbook" -i "$INVENTORY" ansible/backup.yml -e "backup_fetch_dir=$local_dir" "$@" 2>&1 |
  tee "$log_dir/backup.log" || status=$?
if ((status != 0)); then
  # The reason of the task that failed.
  reason="$(sed -n 's/^.*\[ERROR\]: Task failed: \(Action failed: \)\{0,1\}//p' "$log_dir/backup.log" | tail -n 1)"
  if [[ -n "$reason" ]]; then echo "backup: $reason" >&2; fi
  echo "backup: FAILED (exit $status); the full output is in ${log_dir#"$repo_dir"/}/backup.log" >&2
  exit "$status"
fi

manifest="$(newest_manifest)"
[[ -n "$manifest" && "$manifest" != "$before" ]] || die "no new backup arrived in $local_dir"
python3 deploy/backup_summary.py "$manifest" --seconds "$((SECONDS - started))"
