#!/usr/bin/env bash
# `make restore`: restore the database on the db host, into a scratch cluster or database (a
# check) or live; from the pgBackRest repository off the host, or from a pg_dump file.
#
#   INVENTORY=… [TIME='2026-12-02 10:14:00+00' | TIME=LATEST] [INTO=scratch|live] [KEEP=1] \
#     [CONFIRM=…] deploy/restore.sh [extra ansible-playbook args…]
#   INVENTORY=… BACKUP=backups/<inventory>/<name>.dump [INTO=…] [KEEP=1] [CONFIRM=…] deploy/restore.sh
#
# From the repository (no BACKUP; roles/pgbackrest): the state just before TIME (a timestamp with
# its zone), or the newest archived write (TIME unset or LATEST).
#   INTO=scratch (default)  restore beside the live cluster, count every table, verify the
#                           repository, remove it (KEEP=1 keeps it).
#   INTO=live               replace the live cluster: asks for the app database's name (or
#                           CONFIRM=<name>), stops the app, archives a restore point of the live
#                           cluster, restores, starts Postgres and the app (/readyz).
# From a dump (BACKUP: a dump made by flaskstack-backup, `make backup` copies them, its .json
# manifest beside it; its sha256 must match the manifest, else nothing happens):
#   INTO=scratch (default)  restore into a scratch database on the db host, compare every table's
#                           row count with the manifest, drop it again (KEEP=1 keeps it).
#   INTO=live               replace the live database: asks for its name (or CONFIRM=<name>), stops
#                           the app, backs the database up, restores, starts the app (/readyz).
# Prints the row counts; exits non-zero on a mismatch or any failure.
# ANSIBLE_PLAYBOOK and the vault as for deploy/deploy.sh.
set -euo pipefail

ops_command=restore
# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"
require_inventory "make restore INVENTORY=ansible/inventories/<name> [TIME=…|BACKUP=…]"
time_target="${TIME:-}"
if [[ "$time_target" == LATEST ]]; then time_target=""; fi
if [[ -n "${BACKUP:-}" ]]; then
  [[ -z "$time_target" ]] || die "TIME restores from the repository, BACKUP from a dump: not both"
  source_kind=dump
  [[ "$BACKUP" == *.dump && -f "$BACKUP" ]] || die "BACKUP=$BACKUP is not a .dump file"
  backup="$(realpath "$BACKUP")"
  manifest="${backup%.dump}.json"
  [[ -f "$manifest" ]] || die "no manifest beside the dump: $manifest is missing"
  what="$BACKUP"
else
  source_kind=archive
  backup=""
  if [[ -n "$time_target" ]]; then
    # A time without its zone would be read in the db host's zone: say which one.
    [[ "$time_target" =~ ([+-][0-9]{2}(:?[0-9]{2})?|Z|UTC)$ ]] ||
      die "TIME='$time_target' needs its time zone, e.g. '2026-12-02 10:14:00+00'"
    what="the repository's state at $time_target"
  else
    what="the repository's newest archived write"
  fi
fi
into="${INTO:-scratch}"
[[ "$into" == scratch || "$into" == live ]] || die "INTO must be scratch or live, not '$into'"
inventory="$(realpath "$INVENTORY")"
find_ansible_playbook
log_dir="$repo_dir/.build/restore/$inventory_slug"
umask 077
mkdir -p "$log_dir"

confirm="${CONFIRM:-}"
if [[ "$into" == live && -z "$confirm" ]]; then
  [[ -t 0 ]] || die "INTO=live needs CONFIRM=<the live database's name> when not run from a terminal; nothing was changed"
  if [[ "$source_kind" == dump ]]; then
    taken="$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["created_at"], "from database", m["database"])' "$manifest")"
    echo "This REPLACES the live database of $INVENTORY with $BACKUP (taken $taken)."
  else
    echo "This REPLACES the live database of $INVENTORY with $what."
  fi
  echo "Everything written since is lost, and the site answers 502 while the restore runs."
  read -r -p "Type the live database's name to go on: " confirm
fi

# Extra variables as JSON: CONFIRM and the paths reach the playbook verbatim.
report="$log_dir/report.txt"
rm -f "$report"
extra_vars="$(python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  restore_source "$source_kind" restore_dump "$backup" restore_time "$time_target" \
  restore_into "$into" restore_confirm "$confirm" \
  restore_keep "${KEEP:-0}" restore_report "$report")"

started=$SECONDS
echo "==> restore of $what into the $([[ "$into" == live ]] && echo live || echo scratch) database of $INVENTORY"
# This run's name and operator, for the deploy lock a live restore holds (see deploy/deploy.sh).
deploy_id="$(new_run_id restore)"
status=0
"$ansible_playbook" -i "$inventory" ansible/restore.yml -e "$extra_vars" -e "deploy_id=$deploy_id" \
  -e "deploy_lock_owner=$operator" "$@" 2>&1 | tee "$log_dir/restore.log" || status=$?
if ((status != 0)) && [[ "$into" == live ]]; then
  give_deploy_lock_back "$deploy_id" "$log_dir/unlock.log"
fi

echo
if [[ -s "$report" ]]; then
  sed '/^$/d' "$report"
fi
if ((status != 0)); then
  # The reason of the task that failed, e.g. a refused confirmation or a damaged dump.
  reason="$(sed -n 's/^.*\[ERROR\]: Task failed: \(Action failed: \)\{0,1\}//p' "$log_dir/restore.log" | tail -n 1)"
  if [[ -n "$reason" ]]; then echo "restore: $reason" >&2; fi
  echo "restore: FAILED (exit $status) after $((SECONDS - started)) s; the full output is in ${log_dir#"$repo_dir"/}/restore.log" >&2
  exit "$status"
fi
echo "restore: done in $((SECONDS - started)) s$([[ "$into" == live ]] && echo "; the site answers /readyz again")"
