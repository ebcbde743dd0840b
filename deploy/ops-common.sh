# shellcheck shell=bash disable=SC2034,SC2154
# (the variables it sets are used by its callers; ops_command is set by them)
# Sourced by the ops commands that run a playbook against an inventory (deploy.sh, backup.sh,
# restore.sh): the checks and settings they share. The caller names itself in ops_command
# first; from here on it runs in the repository's root.

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_dir" || exit 2

die() { echo "${ops_command}: $*" >&2; exit 2; }

# INVENTORY must name an inventory directory or file; $1 is how to call the command.
require_inventory() {
  [[ -n "${INVENTORY:-}" ]] || die "INVENTORY is not set: $1"
  [[ -d "$INVENTORY" || -f "$INVENTORY" ]] ||
    die "INVENTORY=$INVENTORY is neither a directory nor a file"
  # One directory of logs (and locks) per inventory, named after its path.
  inventory_slug="$(realpath --relative-to="$repo_dir" "$INVENTORY" | tr -c 'A-Za-z0-9.\n-' '_')"
}

# The virtualenv's ansible-playbook (make venv), else the one on PATH; ANSIBLE_PLAYBOOK wins.
find_ansible_playbook() {
  ansible_playbook="${ANSIBLE_PLAYBOOK:-$repo_dir/.venv/bin/ansible-playbook}"
  if [[ ! -x "$ansible_playbook" ]]; then
    ansible_playbook="$(command -v ansible-playbook)" ||
      die "no ansible-playbook: run 'make venv' (or set ANSIBLE_PLAYBOOK)"
  fi
  export ANSIBLE_CONFIG="$repo_dir/ansible/ansible.cfg"
  # An inventory Ansible cannot read is an error, not an empty run that reports success.
  export ANSIBLE_INVENTORY_UNPARSED_FAILED=True
  use_mitogen_strategy
  # Colours survive the tee into the logs.
  ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-$([[ -t 1 ]] && echo 1 || echo 0)}"
  export ANSIBLE_FORCE_COLOR
}

# Mitogen's strategy when the interpreter beside ansible-playbook has it (make venv installs it):
# the same tasks and results, one Python per host instead of one per task. Its plugin directory
# moves with the virtualenv, so it is found here rather than written in ansible.cfg.
# ANSIBLE_STRATEGY=linear runs Ansible's own strategy, should Mitogen ever misbehave.
use_mitogen_strategy() {
  [[ "${ANSIBLE_STRATEGY:-mitogen_linear}" == mitogen_linear ]] || return 0
  local strategy_plugins
  strategy_plugins="$("$(dirname "$ansible_playbook")/python" -c \
    'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))' 2>/dev/null)" ||
    return 0
  export ANSIBLE_STRATEGY_PLUGINS="$strategy_plugins/plugins/strategy" ANSIBLE_STRATEGY=mitogen_linear
}

# A name for this run (the hosts' deploy lock shows it, with who runs it): prefix-time-random.
new_run_id() {
  echo "$1-$(date -u +%Y%m%dT%H%M%SZ)-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
}
operator="$(id -un)@$(hostname)"

# A run that failed stopped before its last play gave the hosts' deploy lock back: do it now.
# Only this run's lock goes ($1: its id); another run's stays. $2: where to log.
give_deploy_lock_back() {
  "$ansible_playbook" -i "$INVENTORY" "$repo_dir/ansible/unlock.yml" -e "deploy_id=$1" \
    >"$2" 2>&1 || echo "could not give the deploy lock back (log: $2)" >&2
}
