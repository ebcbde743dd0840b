#!/usr/bin/env bash
# `make monitor`: the monitor host's Prometheus (its dashboard) and Alertmanager in a local
# browser, through an SSH tunnel: both listen on that host's loopback only, and its sshd lets the
# login user forward to those two ports and nothing else.
#
#   INVENTORY=ansible/inventories/production deploy/monitor.sh [LOCAL_PORT]
#   INVENTORY=ansible/inventories/production deploy/monitor.sh --status
#   INVENTORY=ansible/inventories/production deploy/monitor.sh --logs [UNIT] [SINCE]
#
# Prints the URLs and holds the tunnel until Ctrl-C. LOCAL_PORT (default 9090) takes Prometheus,
# the next port Alertmanager. --status (`make status`): the stack on one screen
# (deploy/status_report.py) through a tunnel of its own, closed afterwards; exits 1 when a host
# is down or a critical alert fires. --logs (`make logs`): every host's journal as the monitor
# host received it, merged in time order, each line naming its host; UNIT (e.g.
# flaskstack-web.service) narrows it, SINCE (journalctl's --since; default -1h) starts it.
set -euo pipefail

ops_command=monitor

# shellcheck source=deploy/ops-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/ops-common.sh"
require_inventory "make monitor INVENTORY=ansible/inventories/<name>"
find_ansible_playbook
status=false
logs=false
if [[ "${1:-}" == --logs ]]; then
  logs=true
  unit="${2:-}" since="${3:--1h}"
  local_port=0
elif [[ "${1:-}" == --status ]]; then
  status=true
  # A free port of this machine for the tunnel.
  local_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
else
  local_port="${1:-9090}"
fi

# The monitor host and how Ansible reaches it (address, user, key, port, options), from the
# inventory as Ansible resolves it.
connection="$("$(dirname "$ansible_playbook")/ansible-inventory" -i "$INVENTORY" --list 2>/dev/null |
  "$(dirname "$ansible_playbook")/python" -c '
import json, shlex, sys
import yaml
inventory = json.load(sys.stdin)
# The ports: from the inventory, else the shared defaults (roles/flaskstack).
defaults = yaml.safe_load(open("ansible/roles/flaskstack/defaults/main.yml"))
hosts = inventory.get("monitor", {}).get("hosts", [])
if not hosts:
    sys.exit("the inventory has no monitor host (group monitor)")
name = hosts[0]
facts = {**defaults, **inventory["all"].get("vars", {}),
         **inventory["_meta"]["hostvars"].get(name, {})}
print(shlex.join([
    name, facts.get("ansible_host", name), str(facts.get("ansible_user", "")),
    str(facts.get("ansible_ssh_private_key_file", "")), str(facts.get("ansible_port", 22)),
    str(facts.get("ansible_ssh_common_args", "")),
    str(facts["prometheus_port"]), str(facts["alertmanager_port"]),
]))')" || die "could not read the monitor host from $INVENTORY"
eval "set -- $connection"
name="$1" address="$2" user="$3" key="$4" port="$5" common_args="$6" prometheus="$7" alertmanager="$8"

ssh_argv=(ssh -p "$port")
[[ -n "$key" ]] && ssh_argv+=(-i "$key")
# shellcheck disable=SC2206 # the inventory's options, split as Ansible splits them
[[ -n "$common_args" ]] && ssh_argv+=($common_args)
destination="${user:+$user@}$address"

if $logs; then
  # journalctl on the monitor host, over what systemd-journal-remote keeps (roles/logs).
  command=(sudo -n journalctl --directory=/var/log/journal/remote --no-pager --output=short-iso
    --since="$since")
  [[ -n "$unit" ]] && command+=(--unit="$unit")
  exec "${ssh_argv[@]}" -T "$destination" "$(printf '%q ' "${command[@]}")"
fi

ssh_argv+=(-N -o ExitOnForwardFailure=yes)
ssh_argv+=(-L "127.0.0.1:${local_port}:127.0.0.1:${prometheus}")
ssh_argv+=(-L "127.0.0.1:$((local_port + 1)):127.0.0.1:${alertmanager}")
ssh_argv+=("$destination")

if $status; then
  "${ssh_argv[@]}" 2>/dev/null &
  tunnel=$!
  trap 'kill "$tunnel" 2>/dev/null' EXIT
  for _ in $(seq 100); do
    curl -fsS --noproxy '*' -o /dev/null "http://127.0.0.1:${local_port}/-/ready" 2>/dev/null && break
    kill -0 "$tunnel" 2>/dev/null || die "the SSH tunnel to $name ($address) failed"
    sleep 0.2
  done
  echo "==> the stack as the monitor host $name sees it"
  python3 "$repo_dir/deploy/status_report.py" "http://127.0.0.1:${local_port}"
  exit $?
fi

echo "==> tunnel to the monitor host $name ($address); Ctrl-C closes it"
echo "  dashboard:    http://127.0.0.1:${local_port}/consoles/flaskstack.html"
echo "  alerts:       http://127.0.0.1:${local_port}/alerts"
echo "  Alertmanager: http://127.0.0.1:$((local_port + 1))/ (silences)"
exec "${ssh_argv[@]}"
