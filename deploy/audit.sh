#!/usr/bin/env bash
# `make audit`: audit every host of an inventory as an auditor would, then print one table.
#
#   INVENTORY=ansible/inventories/production deploy/audit.sh
#   INVENTORY=… LIMIT=edge1,data1 deploy/audit.sh   (an Ansible host pattern: only those hosts)
#
# On each host (ansible/audit.yml): Lynis's hardening index and warnings, and systemd-analyze
# security's exposure rating of every unit the stack runs; Lynis is installed for the run and
# purged afterwards. From this machine: ssh-audit against each host's sshd. The table is followed
# by the hosts that miss the bar: a Lynis index below AUDIT_MIN_INDEX (80), a Lynis warning, an
# ssh-audit failure or warning, a unit rated above AUDIT_MAX_EXPOSURE (2.5). Exits 1 then, 0 when
# every host passes, 2 when the audit could not run. Results: .build/audit/<inventory>/.
#
# ssh-audit runs last: OpenSSH 10 penalises an address whose handshakes end unfinished, as the
# scanner's do, and may refuse new connections from this machine for a short while afterwards.
set -euo pipefail

ops_command=audit

# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"
require_inventory "make audit INVENTORY=ansible/inventories/<name>"
find_ansible_playbook

out_dir="$repo_dir/.build/audit/$inventory_slug"
rm -rf "$out_dir"
mkdir -p "$out_dir"
started=$SECONDS
limit="${LIMIT:-all}"

echo "==> Lynis and systemd-analyze on the hosts matching '$limit' (log: $out_dir/ansible.log)"
if ! "$ansible_playbook" -i "$INVENTORY" --limit "$limit" "$repo_dir/ansible/audit.yml" \
  -e "audit_fetch_dir=$out_dir" >"$out_dir/ansible.log" 2>&1; then
  tail -n 30 "$out_dir/ansible.log" >&2
  die "the audit playbook failed (log: $out_dir/ansible.log)"
fi

echo "==> ssh-audit against each of those hosts' sshd"
python="${AUDIT_PYTHON:-$repo_dir/.venv/bin/python}"
status=0
"$python" "$repo_dir/deploy/audit_summary.py" --inventory "$INVENTORY" --limit "$limit" --results "$out_dir" \
  --min-index "${AUDIT_MIN_INDEX:-80}" --max-exposure "${AUDIT_MAX_EXPOSURE:-2.5}" || status=$?
echo "audit: $((SECONDS - started)) s; results in ${out_dir#"$repo_dir/"}/ (summary.json)"
exit "$status"
