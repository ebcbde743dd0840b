#!/usr/bin/env bash
# The end-to-end stages: a fresh sandbox, the same deploy path as `make demo` and production,
# checks from outside as a user and an auditor would, then teardown — always, even when a step
# fails or the run is interrupted. `make test` runs single and ha; multi is `make test-e2e-multi`.
#
#   tools/run-e2e.sh single   one host in every group (SANDBOX_ID 20)
#   tools/run-e2e.sh ha       edge1 + edge2 (one floating address), app1 + app2, data1-3
#                             (Patroni, etcd, Redis + Sentinel), backup1 (SANDBOX_ID 22)
#   tools/run-e2e.sh multi    edge1, app1 + app2, data1: the repository in the S3 bucket, a
#                             replaced db host restored from it, the second app (SANDBOX_ID 21)
#
# Their own SANDBOX_IDs keep them clear of each other and of a `make demo` (0) that may be up.
set -euo pipefail
cd "$(dirname "$0")/.."

topology="${1:-single}"
# Order matters: the user flows and the second deploy (changed=0) run on the untouched stack,
# then what ops do to it under load (deploys, rollback, renewal, kills, restarts, reboot; an app
# host failing), backups and restore drills, faults and the alerts they raise, the hostile-input
# corpus (its last module checks the app's log over all of it and prints the table), then the
# audit scans, and last the host audit (ssh-audit's unfinished handshakes may earn this machine
# a short penalty from the hosts' sshd). The ha stage checks the cluster, the edges and the
# private network, backs up from a standby and restores across a switchover, runs the HA fault
# suite, and its host audit (one host of each kind) covers the failover engines' units too. The
# multi stage (not in `make test`) keeps what the ha stage lacks: the S3 repository, a db host
# replaced and restored from it, and the second app: examples/guestbook replaces the blog
# (deploy, a rolling release switch and a rollback under load), graded by the scans and the audit.
case "$topology" in
  single)
    default_id=20
    tests=(tests/e2e/test_edge.py tests/e2e/test_user_flows.py tests/e2e/test_microcache.py
      tests/e2e/test_hardening.py tests/e2e/test_integrity.py tests/e2e/test_locks.py tests/e2e/test_operations.py tests/e2e/test_faults.py
      tests/e2e/test_backups.py tests/e2e/test_pitr.py tests/e2e/test_backup_host.py
      tests/e2e/test_monitoring.py
      tests/e2e/hostile/test_hostile_limits.py tests/e2e/hostile/test_hostile_edge.py
      tests/e2e/hostile/test_hostile_sessions.py tests/e2e/hostile/test_hostile_input.py
      tests/e2e/hostile/test_hostile_survival.py
      tests/e2e/test_scans.py tests/e2e/test_audit.py)
    ;;
  multi)
    default_id=21
    # What the ha stage does not run: the S3 repository, a replaced db host, the second app.
    tests=(tests/e2e/test_pitr.py::test_the_first_deploy_took_a_full_backup_into_the_repository
      tests/e2e/multi/test_failover.py tests/e2e/multi/test_replaced_db_host.py
      tests/e2e/multi/test_second_app.py
      tests/e2e/test_scans.py tests/e2e/test_audit.py)
    ;;
  ha)
    default_id=22
    tests=(tests/e2e/test_operations.py::test_second_deploy_changes_nothing
      tests/e2e/multi/test_rolling_deploy.py
      tests/e2e/ha/test_cluster.py tests/e2e/ha/test_edges.py
      tests/e2e/test_user_flows.py tests/e2e/test_hardening.py
      # The same sshd settings as every host's (checked above): the single stage floods it.
      --deselect tests/e2e/test_hardening.py::test_a_flood_of_ssh_connections_from_one_address_is_cut_off
      tests/e2e/multi/test_private_services.py tests/e2e/multi/test_sessions.py
      tests/e2e/multi/test_scheduled_jobs.py
      tests/e2e/test_pitr.py::test_the_first_deploy_took_a_full_backup_into_the_repository
      tests/e2e/ha/test_cluster_backups.py
      tests/e2e/ha/test_ha_faults.py
      tests/e2e/test_audit.py)
    ;;
  *)
    echo "usage: $0 [single|multi|ha]" >&2
    exit 2
    ;;
esac

export SANDBOX_ID="${E2E_SANDBOX_ID:-$default_id}"
export SANDBOX_JSON="$PWD/.sandbox-${SANDBOX_ID}/sandbox.json"
sandbox=tools/sandbox/sandbox.sh
started=$SECONDS

stage() { printf '\n==> [e2e %s %4ds] %s\n' "$topology" "$((SECONDS - started))" "$*"; }

teardown() {
  status=$?
  fault_table=".build/e2e/faults-${SANDBOX_ID}.txt"
  if [[ -s "$fault_table" ]]; then
    stage "the fault-injection suite's table"
    cat "$fault_table"
  fi
  alert_table=".build/e2e/alerts-${SANDBOX_ID}.txt"
  if [[ -s "$alert_table" ]]; then
    stage "the alerts the faults raised"
    cat "$alert_table"
  fi
  stage "tearing the sandbox down"
  "$sandbox" down || status=1
  stage "end-to-end stage ($topology) finished with status $status in $((SECONDS - started)) s"
  exit "$status"
}
trap teardown EXIT
# Interrupted: exit with the signal's status, so the teardown does not report success.
trap 'exit 130' INT
trap 'exit 143' TERM

stage "removing what an interrupted earlier run may have left"
"$sandbox" down >/dev/null
rm -f ".build/e2e/faults-${SANDBOX_ID}.txt" ".build/e2e/alerts-${SANDBOX_ID}.txt"

stage "creating the sandbox hosts ($topology) and the ACME CA"
"$sandbox" up "$topology"
inventory=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inventory"])' "$SANDBOX_JSON")

stage "first deploy (make deploy INVENTORY=$inventory)"
deploy_started=$SECONDS
INVENTORY="$inventory" deploy/deploy.sh
echo "first deploy took $((SECONDS - deploy_started)) s"

stage "checking the deployment from outside"
# -rP: the captured output of passed tests too (timings, load counts, the scan table);
# --durations: the slowest tests, to see where the stage's time goes.
.venv/bin/pytest -p no:cacheprovider -v -rP --durations=15 "${tests[@]}"
