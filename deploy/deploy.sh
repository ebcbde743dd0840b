#!/usr/bin/env bash
# `make deploy`: build the release, run the playbook against an inventory, print a summary.
#
#   INVENTORY=ansible/inventories/production deploy/deploy.sh [extra ansible-playbook args…]
#
# INVENTORY (required): an inventory directory or file. PLAYBOOK (default ansible/site.yml).
# ANSIBLE_PLAYBOOK: the ansible-playbook to run (default .venv/bin/ansible-playbook, else PATH).
# Vault: export ANSIBLE_VAULT_PASSWORD_FILE, or pass --ask-vault-pass.
# Exits non-zero when the build or the playbook fails; the summary is printed either way.
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_dir"

die() { echo "deploy: $*" >&2; exit 2; }

[[ -n "${INVENTORY:-}" ]] ||
  die "INVENTORY is not set: make deploy INVENTORY=ansible/inventories/<name> (see ansible/inventories/production.example)"
[[ -d "$INVENTORY" || -f "$INVENTORY" ]] ||
  die "INVENTORY=$INVENTORY is neither a directory nor a file"
playbook="${PLAYBOOK:-ansible/site.yml}"
[[ -f "$playbook" ]] || die "PLAYBOOK=$playbook does not exist"

ansible_playbook="${ANSIBLE_PLAYBOOK:-$repo_dir/.venv/bin/ansible-playbook}"
if [[ ! -x "$ansible_playbook" ]]; then
  ansible_playbook="$(command -v ansible-playbook)" ||
    die "no ansible-playbook: run 'make venv' (or set ANSIBLE_PLAYBOOK)"
fi
ansible_bin="$(dirname "$ansible_playbook")"

export ANSIBLE_CONFIG="$repo_dir/ansible/ansible.cfg"
# Colours survive the tee into the log; the log keeps the full output of the last deploy.
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-$([[ -t 1 ]] && echo 1 || echo 0)}"
# One log, lock and summary per inventory: deploys to different inventories may run side by side.
inventory_slug="$(realpath --relative-to="$repo_dir" "$INVENTORY" | tr -c 'A-Za-z0-9.\n-' '_')"
log_dir="$repo_dir/.build/deploy/$inventory_slug"
mkdir -p "$log_dir"
log_file="$log_dir/deploy.log"

# Two deploys of the same inventory from this checkout never overlap.
exec 9>"$log_dir/lock"
flock --nonblock 9 || die "another deploy to $INVENTORY is running (lock: $log_dir/lock)"

started=$SECONDS
echo "==> building the release"
archive="$(deploy/build-release.sh)"

echo "==> ansible-playbook $playbook on $INVENTORY"
status=0
"$ansible_playbook" -i "$INVENTORY" "$playbook" \
  -e "app_release_archive=$archive" "$@" 2>&1 | tee "$log_file" || status=$?

# The summary: URL, hosts with their groups and their recap counts, the time taken. The groups
# come from --graph (no variables needed); the domain from --list (needs the vault, if any).
inventory_cmd=("$ansible_bin/ansible-inventory" -i "$INVENTORY" --playbook-dir "$(dirname "$playbook")")
"${inventory_cmd[@]}" --graph >"$log_dir/deploy-inventory.graph" 2>/dev/null || :
"${inventory_cmd[@]}" --list >"$log_dir/deploy-inventory.json" 2>/dev/null || echo '{}' >"$log_dir/deploy-inventory.json"
python3 - "$log_dir/deploy-inventory.graph" "$log_dir/deploy-inventory.json" "$log_file" "$archive" "$((SECONDS - started))" "$status" <<'PY'
import json
import re
import sys

graph_file, inventory_file, log_file, archive, seconds, status = sys.argv[1:]
hostvars = json.load(open(inventory_file)).get("_meta", {}).get("hostvars", {})

# ansible-inventory --graph: "  |--@app:" opens a group, "  |  |--host1" is a member.
groups = {}
group_at_depth = {}
for line in open(graph_file):
    depth = line.find("|--")
    name = line.rstrip()[depth + 3 :] if depth >= 0 else line.strip()
    if name.startswith("@"):
        group_at_depth[depth] = name[1:].rstrip(":")
    elif depth >= 0:
        parent = group_at_depth.get(depth - 3)
        if parent in ("edge", "app", "db", "cache"):
            groups.setdefault(name, []).append(parent)

recap = {}
ansi = re.compile(r"\x1b\[[0-9;]*m")
pattern = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")
for line in open(log_file, errors="replace"):
    match = pattern.match(ansi.sub("", line))
    if match:
        recap[match[1]] = dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()[1:])))

domains = sorted({v["site_domain"] for v in hostvars.values() if isinstance(v.get("site_domain"), str)})
release = archive.rsplit("/", 1)[-1].removeprefix("flaskstack-").removesuffix(".tar.gz")
minutes, secs = divmod(int(seconds), 60)
print()
print("==> summary")
for domain in domains or ["(site_domain not set)"]:
    print(f"  url:      https://{domain}/")
print(f"  release:  {release}")
print(f"  time:     {minutes}m{secs:02d}s")
print(f"  {'host':<28} {'groups':<22} {'ok':>4} {'changed':>8} {'failed':>7} {'unreach':>8}")
for host in sorted(set(groups) | set(recap)):
    counts = recap.get(host)
    cells = (
        [str(counts[k]) for k in ("ok", "changed", "failed", "unreachable")]
        if counts else ["-", "-", "-", "-"]
    )
    print(f"  {host:<28} {','.join(groups.get(host, [])):<22} {cells[0]:>4} {cells[1]:>8} "
          f"{cells[2]:>7} {cells[3]:>8}")
failed = status != "0" or any(c["failed"] or c["unreachable"] for c in recap.values())
print(f"  result:   {'FAILED (log: ' + log_file + ')' if failed else 'ok'}")
PY
exit "$status"
