#!/usr/bin/env bash
# `make deploy`: build the release, run the playbook against an inventory, print a summary.
#
#   INVENTORY=ansible/inventories/production deploy/deploy.sh [extra ansible-playbook args…]
#   INVENTORY=… PLAYBOOK=ansible/rollback.yml deploy/deploy.sh [-e rollback_release=<id>]
#
# INVENTORY (required): an inventory directory or file. PLAYBOOK (default ansible/site.yml; only
# site.yml builds a release).
# ANSIBLE_PLAYBOOK: the ansible-playbook to run (default .venv/bin/ansible-playbook, else PATH).
# Vault: export ANSIBLE_VAULT_PASSWORD_FILE, or pass --ask-vault-pass.
# Exits non-zero when the build or the playbook fails; the summary is printed either way.
set -euo pipefail


ops_command=deploy
# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"

require_inventory "make deploy INVENTORY=ansible/inventories/<name> (see ansible/inventories/production.example)"
playbook="${PLAYBOOK:-ansible/site.yml}"
[[ -f "$playbook" ]] || die "PLAYBOOK=$playbook does not exist"

find_ansible_playbook
ansible_bin="$(dirname "$ansible_playbook")"

# One log, lock and summary per inventory: deploys to different inventories may run side by side.
log_dir="$repo_dir/.build/deploy/$inventory_slug"
mkdir -p "$log_dir"
log_file="$log_dir/deploy.log"

# Two deploys of the same inventory from this checkout never overlap.
exec 9>"$log_dir/lock"
flock --nonblock 9 || die "another deploy to $INVENTORY is running (lock: $log_dir/lock)"

started=$SECONDS
extra_vars=()
release="rollback to ${ROLLBACK_RELEASE:-the previous release}"
if [[ "$(basename "$playbook")" == site.yml ]]; then
  # `-e app_release_archive=PATH` deploys that archive (e.g. an earlier build) instead of a new one.
  archive=""
  for arg in "$@"; do
    if [[ "$arg" == app_release_archive=* ]]; then archive="${arg#*=}"; fi
  done
  if [[ -z "$archive" ]]; then
    echo "==> building the release"
    archive="$(deploy/build-release.sh)"
  fi
  extra_vars+=(-e "app_release_archive=$archive")
  release="$(basename "$archive" .tar.gz)"
  release="${release#flaskstack-}"
fi

# This run's name and its operator: the hosts' deploy lock and deploy record show them.
deploy_id="$(new_run_id deploy)"
extra_vars+=(-e "deploy_id=$deploy_id" -e "deploy_lock_owner=$operator" -e "app_deployed_by=$operator")

# The app's hooks ([hooks] in its flaskstack.toml, docs/app-contract.md), run here from the
# release being deployed: its files unpacked in a directory of their own.
hooks_dir=""
if [[ -n "${archive:-}" ]]; then
  hooks_dir="$(mktemp -d "${TMPDIR:-/tmp}/flaskstack-hooks.XXXXXX")"
  trap 'rm -rf "$hooks_dir"' EXIT
  tar -xzf "$archive" -C "$hooks_dir"
fi
run_hook() {
  [[ -n "$hooks_dir" ]] || return 0
  FLASKSTACK_HOOK="$1" FLASKSTACK_RELEASE="$release" FLASKSTACK_INVENTORY="$INVENTORY" \
    FLASKSTACK_DEPLOY_ID="$deploy_id" FLASKSTACK_PERFORMER="$operator" \
    FLASKSTACK_RUNTIME="$((SECONDS - started))" \
    python3 "$hooks_dir/deploy/manifest.py" run "$1" "$hooks_dir"
}
run_hook pre-deploy || die "the app's pre-deploy hook failed: nothing was deployed"

echo "==> ansible-playbook $playbook on $INVENTORY (run $deploy_id)"
status=0
"$ansible_playbook" -i "$INVENTORY" "$playbook" "${extra_vars[@]}" "$@" 2>&1 |
  tee "$log_file" || status=$?

# A failed run stops before its last play gives the hosts' deploy lock back: do it here (only
# this run's lock; another run's stays).
if ((status != 0)); then
  echo "==> giving the deploy lock back"
  give_deploy_lock_back "$deploy_id" "$log_dir/unlock.log"
elif ! run_hook post-deploy; then
  echo "==> the app's post-deploy hook failed (the release is deployed and serves)"
  status=1
fi

# The summary: URL, hosts with their groups and their recap counts, the time taken. The groups
# come from --graph (no variables needed); the domain from --list (needs the vault, if any).
inventory_cmd=("$ansible_bin/ansible-inventory" -i "$INVENTORY" --playbook-dir "$(dirname "$playbook")")
"${inventory_cmd[@]}" --graph >"$log_dir/inventory.graph" 2>/dev/null || :
"${inventory_cmd[@]}" --list >"$log_dir/inventory.json" 2>/dev/null || echo '{}' >"$log_dir/inventory.json"
python3 deploy/deploy_summary.py --graph "$log_dir/inventory.graph" \
  --inventory "$log_dir/inventory.json" --log "$log_file" --release "$release" \
  --seconds "$((SECONDS - started))" --status "$status"
exit "$status"
