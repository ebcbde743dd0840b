#!/usr/bin/env bash
# The multi-host end-to-end stage of `make test`: a fresh sandbox of one edge host, two app hosts
# and one Postgres + Redis host, deployed by the same path as `make deploy`, checked from outside
# (sessions across app hosts, an app host failing under write load, private data services, the
# audit scans), then teardown — always, even when a step fails. SANDBOX_ID 21 by default keeps it
# clear of the single-host stage (20) and of a `make demo` (0).
set -euo pipefail
cd "$(dirname "$0")/../.."

export SANDBOX_ID="${E2E_SANDBOX_ID:-21}"
state=".sandbox-${SANDBOX_ID}"
export SANDBOX_JSON="$PWD/$state/sandbox.json"
sandbox=deploy/sandbox/sandbox.sh
started=$SECONDS

stage() { printf '\n==> [e2e-multi %4ds] %s\n' "$((SECONDS - started))" "$*"; }

teardown() {
  status=$?
  stage "tearing the sandbox down"
  "$sandbox" down || status=1
  stage "multi-host stage finished with status $status in $((SECONDS - started)) s"
  exit "$status"
}
trap teardown EXIT
# Interrupted: exit with the signal's status, so the teardown does not report success.
trap 'exit 130' INT
trap 'exit 143' TERM

stage "removing what an interrupted earlier run may have left"
"$sandbox" down >/dev/null

stage "creating the sandbox hosts (edge1, app1, app2, data1) and the ACME CA"
"$sandbox" up multi
inventory=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inventory"])' "$SANDBOX_JSON")

stage "first deploy (make deploy INVENTORY=$inventory)"
deploy_started=$SECONDS
INVENTORY="$inventory" deploy/deploy.sh
echo "first deploy took $((SECONDS - deploy_started)) s"

stage "checking the deployment from outside"
# Order matters: the second deploy (changed=0) and the user flows run on the untouched stack;
# the failover test powers an app host off and on again; the scans grade what is left running.
.venv/bin/pytest -p no:cacheprovider -v -s \
  "tests/e2e/test_operations.py::test_second_deploy_changes_nothing" \
  tests/e2e/multi/test_rolling_deploy.py \
  tests/e2e/test_edge.py tests/e2e/test_user_flows.py tests/e2e/test_hardening.py \
  tests/e2e/multi/test_private_services.py tests/e2e/multi/test_sessions.py \
  tests/e2e/multi/test_failover.py \
  tests/e2e/test_scans.py
