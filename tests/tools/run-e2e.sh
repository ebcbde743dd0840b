#!/usr/bin/env bash
# The end-to-end stage of `make test`: a fresh sandbox, the same deploy path as `make demo`
# and production, checks from outside as a user and an auditor would, then teardown — always,
# even when a step fails. Its own SANDBOX_ID keeps it clear of a `make demo` that may be up.
set -euo pipefail
cd "$(dirname "$0")/../.."

export SANDBOX_ID="${E2E_SANDBOX_ID:-20}"
state=".sandbox-${SANDBOX_ID}"
export SANDBOX_JSON="$PWD/$state/sandbox.json"
sandbox=deploy/sandbox/sandbox.sh
started=$SECONDS

stage() { printf '\n==> [e2e %4ds] %s\n' "$((SECONDS - started))" "$*"; }

teardown() {
  status=$?
  stage "tearing the sandbox down"
  "$sandbox" down || status=1
  stage "end-to-end stage finished with status $status in $((SECONDS - started)) s"
  exit "$status"
}
trap teardown EXIT

stage "removing what an interrupted earlier run may have left"
"$sandbox" down >/dev/null

stage "creating the sandbox hosts and the ACME CA"
"$sandbox" up "${TOPOLOGY:-single}"
inventory=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["inventory"])' "$SANDBOX_JSON")

stage "first deploy (make deploy INVENTORY=$inventory)"
deploy_started=$SECONDS
INVENTORY="$inventory" deploy/deploy.sh
echo "first deploy took $((SECONDS - deploy_started)) s"

stage "checking the deployment from outside"
# Order matters: user flows first, then what ops do to the running stack (redeploy, renewal,
# reboot), then the audit scans of the result.
# -rP: the captured output of passed tests too (timings, load counts, the scan table).
.venv/bin/pytest -p no:cacheprovider -v -rP \
  tests/e2e/test_edge.py tests/e2e/test_user_flows.py tests/e2e/test_hardening.py \
  tests/e2e/test_operations.py \
  tests/e2e/test_scans.py
