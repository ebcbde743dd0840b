#!/usr/bin/env bash
# The sandbox: real Debian 13 systemd hosts (systemd-nspawn, one network namespace each) on a
# private bridge, plus a local ACME CA (Pebble, with pebble-challtestsrv answering DNS) and an
# S3-compatible bucket for off-host backups (moto, tools/sandbox/s3_server.py), so that the same
# Ansible `make deploy` path that targets production servers can run, and be tested, on
# one machine.
#
#   sandbox.sh up [single|multi|ha] create or repair the sandbox (idempotent)
#   sandbox.sh down                remove everything it created (idempotent; caches are kept)
#   sandbox.sh status | summary    what is up | how to reach the site
#   sandbox.sh ssh HOST [CMD…]     a shell or a command on a host, as the deploy user
#   sandbox.sh restart HOST        stop and boot a host's container again (a reboot)
#   sandbox.sh stop|start HOST     power a host off or on (e.g. an app host failing under load)
#   sandbox.sh kill HOST           cut a host's power: every process killed at once, no shutdown
#   sandbox.sh partition|heal HOST cut a host off the network (nftables in its namespace drops all
#                                  but loopback, both ways), or join it again
#   sandbox.sh exec HOST CMD…      a command on a host as root, without the network (e.g. on a
#                                  host cut off from it)
#   sandbox.sh replace HOST        a new, empty host in a lost one's place: same name and address,
#                                  a fresh Debian root (new SSH host keys), nothing deployed
#   sandbox.sh ca-root             print the path of the ACME root that issues site certificates
#   sandbox.sh layers              build the cached base layers if missing; print them (overlay
#                                  lowerdir, top first): a Debian 13 host's root, for a chroot
#
# SANDBOX_ID (0-254, default 0) derives every name, subnet and state directory, so several
# sandboxes can run side by side. SANDBOX_CACHE_DIR (default /var/cache/flaskstack-sandbox) holds
# what is kept between sandboxes: the base root filesystem, Pebble, apt and pip caches.
# Runs as root on Debian 12 or 13.
set -euo pipefail

readonly SANDBOX_ID="${SANDBOX_ID:-0}"
if [[ ! "$SANDBOX_ID" =~ ^(0|[1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-4])$ ]]; then
  echo "sandbox: SANDBOX_ID must be an integer from 0 to 254, not '$SANDBOX_ID'" >&2
  exit 2
fi

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly REPO_DIR
readonly DOMAIN="flaskstack.test"
readonly SUBNET_PREFIX="10.231.${SANDBOX_ID}"
readonly GATEWAY_IP="${SUBNET_PREFIX}.1"
readonly PROBE_IP="${SUBNET_PREFIX}.250"
# Several edges share this address (keepalived); the site's names resolve to it.
readonly FLOATING_IP="${SUBNET_PREFIX}.10"
readonly BRIDGE="fsbr${SANDBOX_ID}"
readonly NAME_PREFIX="fs${SANDBOX_ID}"
readonly PROBE_NETNS="${NAME_PREFIX}-probe"
readonly RULE_TAG="flaskstack-sandbox-${SANDBOX_ID}"

# Caches shared by every sandbox and kept by `down`; runtime (overlays, PIDs) per SANDBOX_ID,
# outside the repository so that no tool walking the work tree descends into a host's root.
readonly CACHE_DIR="${SANDBOX_CACHE_DIR:-/var/cache/flaskstack-sandbox}"
readonly RUNTIME_DIR="/var/lib/flaskstack-sandbox/${SANDBOX_ID}"
if [[ "$SANDBOX_ID" == 0 ]]; then
  readonly STATE_DIR="${REPO_DIR}/.sandbox"
  readonly INVENTORY_DIR="${REPO_DIR}/ansible/inventories/sandbox"
else
  readonly STATE_DIR="${REPO_DIR}/.sandbox-${SANDBOX_ID}"
  # Its own inventory so that concurrent sandboxes never overwrite each other's hosts.yml.
  readonly INVENTORY_DIR="${STATE_DIR}/inventory"
fi
readonly SSH_KEY="${STATE_DIR}/id_ed25519"
readonly ACME_ROOT="${STATE_DIR}/acme-root.pem"
readonly PEBBLE_LISTENER_CA="${STATE_DIR}/pebble-listener-ca.pem"
readonly ACME_DIRECTORY="https://${GATEWAY_IP}:14000/dir"
readonly PEBBLE_MANAGEMENT="https://${GATEWAY_IP}:15000"
# The S3-compatible bucket off-host backups go to (tools/sandbox/s3_server.py), over TLS with the
# same listener certificate as Pebble's.
readonly S3_ENDPOINT="${GATEWAY_IP}:9000"
readonly S3_BUCKET="flaskstack-backups"
# Where Alertmanager's notifications land (tools/sandbox/alert_sink.py): an SMTP server and a
# webhook receiver that record what they get, one JSON line each, for the tests to read.
readonly ALERT_SINK_SMTP_PORT=2525
readonly ALERT_SINK_HTTP_PORT=9095
readonly ALERT_RECORD="${STATE_DIR}/alerts.jsonl"

readonly SUITE="trixie"
readonly MIRROR="http://deb.debian.org/debian"
# What a fresh Debian server image has; nginx, Postgres, Redis and certbot are the roles' business.
readonly ROOTFS_PACKAGES=(systemd systemd-sysv dbus openssh-server python3 sudo iproute2 ca-certificates)
# Bump when the rootfs recipe below changes, so that a new cached image is built.
readonly ROOTFS_RECIPE=2

readonly SSH_OPTIONS=(
  -i "$SSH_KEY"
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o BatchMode=yes -o ConnectTimeout=5
)

log() { printf '==> %s\n' "$*"; }
warn() { printf 'sandbox: warning: %s\n' "$*" >&2; }
die() {
  printf 'sandbox: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '7,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 2
}

# --- topology ------------------------------------------------------------------------------------

# One "name:group,group" line per host; addresses are .11, .12, … in this order.
topology_hosts() {
  case "$1" in
    # The backup host keeps the pgBackRest repository (its TLS server) and watches host1 (the
    # monitor host: Prometheus, Alertmanager); multi backs up to S3 and has no monitor host.
    single) printf '%s\n' "host1:edge,app,db,cache" "backup1:backup,monitor" ;;
    multi) printf '%s\n' "edge1:edge" "app1:app" "app2:app" "data1:db,cache" ;;
    # High availability: two edges sharing the floating address (FLOATING_IP), three data
    # hosts, each a Patroni + etcd member, a Redis and a Sentinel.
    ha)
      printf '%s\n' "edge1:edge" "edge2:edge" "app1:app" "app2:app" "data1:db,cache" \
        "data2:db,cache" "data3:db,cache" "backup1:backup,monitor"
      ;;
    *) die "unknown topology '$1' (expected: single, multi or ha)" ;;
  esac
}

host_dir() { echo "${RUNTIME_DIR}/hosts/$1"; }
machine_name() { echo "${NAME_PREFIX}-$1"; }

# Hosts of the running sandbox, in creation order.
known_hosts() {
  [[ -f "${RUNTIME_DIR}/hosts.list" ]] && cut -d: -f1 "${RUNTIME_DIR}/hosts.list"
  return 0
}

host_groups() { grep "^$1:" "${RUNTIME_DIR}/hosts.list" | cut -d: -f2; }

# The edges' floating address when the topology has several edges; nothing otherwise.
floating_ip() {
  local edges
  edges="$(grep -c -E '^[^:]+:(.*,)?edge(,|$)' "${RUNTIME_DIR}/hosts.list" || true)"
  if ((edges > 1)); then echo "$FLOATING_IP"; fi
}

host_ip() {
  local dir
  dir="$(host_dir "$1")"
  [[ -f "$dir/ip" ]] || die "no host '$1' in sandbox ${SANDBOX_ID} (hosts: $(known_hosts | xargs))"
  cat "$dir/ip"
}

# --- processes -----------------------------------------------------------------------------------

# True when PID is alive and still the process we started (its command line contains MARKER):
# guards against signalling an unrelated process that reused a recorded PID.
pid_is() {
  local pid="$1" marker="$2"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# --- cgroups --------------------------------------------------------------------------------------

# Each container needs a cgroup subtree of its own. With --keep-unit, nspawn puts the container in
# a "payload" cgroup below its own cgroup; on a machine without systemd every process sits in the
# root cgroup, so all containers would share one payload cgroup and their systemds would create and
# prune each other's unit cgroups (seen: "nftables.service: Failed to spawn executor: No such file
# or directory" on one host because another host had just removed the unit's cgroup).
cgroup_hierarchies() {
  # The hierarchies that track processes for systemd: cgroup2 (unified or hybrid) and name=systemd.
  findmnt -rn -t cgroup,cgroup2 -o TARGET,FSTYPE,OPTIONS |
    awk '$2 == "cgroup2" || $3 ~ /(^|,)name=systemd(,|$)/ {print $1}'
}

host_cgroup() { echo "flaskstack-sandbox/${SANDBOX_ID}/$(machine_name "$1")"; }

enter_cgroup() {
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do
    mkdir -p "$hierarchy/$1"
    echo "$BASHPID" >"$hierarchy/$1/cgroup.procs"
  done
}

# Remove a (now empty) cgroup subtree, innermost first, in every hierarchy.
remove_cgroup() {
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do
    [[ -d "$hierarchy/$1" ]] || continue
    find "$hierarchy/$1" -depth -type d -exec rmdir {} + 2>/dev/null ||
      warn "cgroup $hierarchy/$1 still has processes; left in place"
  done
}

# A power cut: every process of the host killed at once, no shutdown (cgroup.kill where the
# kernel has it; else SIGKILL to each, again until none is left, in case one forked meanwhile).
kill_cgroup() {
  local hierarchy procs pid rounds=0
  for hierarchy in $(cgroup_hierarchies); do
    [[ -d "$hierarchy/$1" ]] || continue
    if [[ -w "$hierarchy/$1/cgroup.kill" ]]; then echo 1 >"$hierarchy/$1/cgroup.kill"; fi
    while procs="$(find "$hierarchy/$1" -name cgroup.procs -exec cat {} + 2>/dev/null)" &&
      [[ -n "$procs" ]] && ((rounds++ < 100)); do
      for pid in $procs; do kill -KILL "$pid" 2>/dev/null || true; done
      sleep 0.1
    done
  done
}

# --- daemons -------------------------------------------------------------------------------------

# Start a long-running process detached from this script, in its own session, with no inherited
# descriptors (a caller's pipe or our lock held open by a daemon would hang or block the caller),
# its output appended to LOG, and its PID (the same after the exec chain) written to PID_FILE.
spawn_daemon() {
  local pid_file="$1" log_file="$2"
  shift 2
  (
    if [[ -n "${SPAWN_CGROUP:-}" ]]; then enter_cgroup "$SPAWN_CGROUP"; fi
    for fd in /proc/"$BASHPID"/fd/*; do
      fd="${fd##*/}"
      if ((fd > 2)); then eval "exec ${fd}>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" </dev/null >>"$log_file" 2>&1
  ) &
  echo $! >"$pid_file"
}

# True while a process we just spawned lives: right after spawn_daemon its command line may still
# be ours (the exec has not happened yet), so pid_is would wrongly say it is gone; and one that
# died is our unreaped zombie until this script exits.
process_alive() {
  local state
  [[ -n "$1" && -r "/proc/$1/stat" ]] || return 1
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat")"
  [[ "$state" != Z && "$state" != X ]]
}

recorded_pid() { if [[ -f "$1" ]]; then cat "$1"; fi; }

# SIGTERM, wait up to SECONDS, then SIGKILL: a clean shutdown first, a guaranteed end after.
stop_pid() {
  local pid="$1" marker="$2" seconds="$3" waited=0
  pid_is "$pid" "$marker" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while pid_is "$pid" "$marker" && ((waited < seconds * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if pid_is "$pid" "$marker"; then
    warn "PID $pid ($marker) ignored SIGTERM for ${seconds}s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while pid_is "$pid" "$marker"; do sleep 0.1; done
  fi
}

# --- prerequisites -------------------------------------------------------------------------------

ensure_root() {
  ((EUID == 0)) || die "must run as root (it creates network namespaces and containers)"
}

ensure_host_packages() {
  local -A package_of=(
    [debootstrap]=debootstrap [systemd-nspawn]=systemd-container [iptables]=iptables
    [openssl]=openssl [curl]=curl [ssh]=openssh-client [ssh-keygen]=openssh-client
    [/usr/bin/python3]=python3 [flock]=util-linux [dpkg-deb]=dpkg
  )
  local command missing=()
  for command in "${!package_of[@]}"; do
    command -v "$command" >/dev/null || missing+=("${package_of[$command]}")
  done
  ((${#missing[@]})) || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${missing[*]}"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -q)
  if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; then
    "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
  fi
}

# Serialise work on shared caches across sandboxes, and whole commands within one sandbox.
with_lock() {
  local lock_file="$1"
  shift
  mkdir -p "$(dirname "$lock_file")"
  (
    flock 9
    "$@"
  ) 9>"$lock_file"
}

# --- the cached base root filesystem -------------------------------------------------------------

rootfs_package_list() {
  local IFS=,
  echo "${ROOTFS_PACKAGES[*]}"
}

rootfs_dir() {
  local key
  key="$(printf '%s|%s|%s|%s' "$SUITE" "$MIRROR" "$(rootfs_package_list)" "$ROOTFS_RECIPE" |
    sha256sum | cut -c1-12)"
  echo "${CACHE_DIR}/rootfs-${SUITE}-${key}"
}

build_rootfs() {
  local rootfs="$1" scratch
  [[ -d "$rootfs" ]] && return 0  # built in a scratch directory, then moved into place
  scratch="${rootfs}.building"
  rm -rf --one-file-system "$scratch"
  log "building the ${SUITE} base root filesystem (once; cached in $rootfs)"
  debootstrap --variant=minbase --include="$(rootfs_package_list)" "$SUITE" "$scratch" "$MIRROR" \
    >"${CACHE_DIR}/debootstrap.log" 2>&1 ||
    die "debootstrap failed: see ${CACHE_DIR}/debootstrap.log"
  # Full apt sources, like a Debian 13 server image (security updates included).
  rm -f "$scratch/etc/apt/sources.list"
  cat >"$scratch/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR}
Suites: ${SUITE} ${SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: ${SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Per-host identity is made when a host is created: no shared SSH host keys or machine id.
  rm -f "$scratch"/etc/ssh/ssh_host_* "$scratch/etc/hostname" "$scratch/etc/resolv.conf"
  : >"$scratch/etc/machine-id"
  rm -rf "$scratch"/var/cache/apt/archives/*.deb "$scratch"/var/lib/apt/lists/*
  mv "$scratch" "$rootfs"
}

# Bookworm's Pebble (2.4) cannot shorten certificate lifetimes (5 years fails audits): use trixie's
# static binaries, unpacked into the cache without touching the machine's apt sources.
fetch_pebble() {
  local target="${CACHE_DIR}/pebble-${SUITE}"
  [[ -x "$target/usr/bin/pebble" ]] && return 0
  "${REPO_DIR}/tools/fetch-debian.sh" "$SUITE" "$target" pebble
}

# Test tooling only, never in the roles: this machine's HTTPS egress goes through an intercepting
# proxy whose CA the hosts must trust to reach PyPI. It lives in a cached overlay layer between the
# base and each host, because update-ca-certificates takes seconds per host.
machine_ca_files() {
  find /usr/local/share/ca-certificates -maxdepth 1 -type f -name '*.crt' | sort
}

pip_conf() {
  printf '%s\n' "# flaskstack sandbox (test tooling): trust the proxy CA, share one cache" \
    "[global]" "cert = /etc/ssl/certs/ca-certificates.crt" "cache-dir = /var/cache/pip"
}

trust_layer_dir() {
  local key
  key="$({
    basename "$(rootfs_dir)"
    pip_conf
    machine_ca_files | xargs -r cat
  } | sha256sum | cut -c1-12)"
  echo "${CACHE_DIR}/trust-${key}"
}

install_machine_trust() {
  local root="$1" crt
  while IFS= read -r crt; do
    # shellcheck disable=SC2094 # reads the machine's file, writes the host's
    put_file "$root" "/usr/local/share/ca-certificates/$(basename "$crt")" 0644 <"$crt" || return 1
  done < <(machine_ca_files)
  chroot "$root" update-ca-certificates >/dev/null 2>&1 || return 1
  pip_conf | put_file "$root" /etc/pip.conf 0644
}

build_trust_layer() {
  local layer="$1" rootfs="$2" scratch failed=0
  [[ -d "$layer" ]] && return 0
  scratch="${layer}.building"
  rm -rf --one-file-system "$scratch"
  mkdir -p "$scratch/upper" "$scratch/work" "$scratch/root"
  mount -t overlay flaskstack-trust \
    -o "lowerdir=$rootfs,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
  install_machine_trust "$scratch/root" || failed=1
  umount "$scratch/root"
  ((failed == 0)) || die "could not build the trust layer in $scratch"
  mv "$scratch/upper" "$layer"
  rm -rf --one-file-system "$scratch"
}

# Overlay lower layers of every host, top first.
host_lower_layers() { echo "$(trust_layer_dir):$(rootfs_dir)"; }

prepare_caches() {
  mkdir -p "$CACHE_DIR/apt-archives" "$CACHE_DIR/pip"
  # pip accepts a cache only if its user may write it; hosts run pip as root and service users.
  chmod 1777 "$CACHE_DIR/pip"
  build_rootfs "$(rootfs_dir)"
  build_trust_layer "$(trust_layer_dir)" "$(rootfs_dir)"
  fetch_pebble
  build_s3_server
}

# Hosts get their own apt archive directory, seeded with hard links to the shared cache, and new
# packages are harvested back on down/restart: apt's lock on a shared directory would make
# parallel installs on several hosts (and several sandboxes) fail instead of wait.
seed_apt_archives() {
  local archives="$1/apt-archives"
  mkdir -p "$archives/partial"
  find "$CACHE_DIR/apt-archives" -maxdepth 1 -name '*.deb' -exec cp -l -n -t "$archives" {} + \
    2>/dev/null ||
    find "$CACHE_DIR/apt-archives" -maxdepth 1 -name '*.deb' -exec cp -n -t "$archives" {} +
}

harvest_apt_archives() {
  local archives="$1/apt-archives" deb name
  [[ -d "$archives" ]] || return 0
  for deb in "$archives"/*.deb; do
    [[ -f "$deb" ]] || continue
    name="$(basename "$deb")"
    [[ -e "$CACHE_DIR/apt-archives/$name" ]] && continue
    # A hard link where possible; a copy across filesystems. Another host may win the race.
    ln "$deb" "$CACHE_DIR/apt-archives/$name" 2>/dev/null ||
      [[ -e "$CACHE_DIR/apt-archives/$name" ]] ||
      { cp "$deb" "$CACHE_DIR/apt-archives/.$name.$BASHPID" &&
        mv "$CACHE_DIR/apt-archives/.$name.$BASHPID" "$CACHE_DIR/apt-archives/$name"; }
  done
}

# --- network -------------------------------------------------------------------------------------

uplink_mtu() {
  local device
  device="$(ip -o route show default |
    awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | head -1)"
  if [[ -n "$device" && -r "/sys/class/net/$device/mtu" ]]; then
    cat "/sys/class/net/$device/mtu"
  else
    echo 1500
  fi
}

# The rules this sandbox adds, one per line (table, chain, rule); `down` deletes exactly these.
iptables_rules() {
  local tag="-m comment --comment $RULE_TAG" replies="-m conntrack --ctstate RELATED,ESTABLISHED"
  printf '%s\n' \
    "filter FORWARD -i $BRIDGE -o $BRIDGE $tag -j ACCEPT" \
    "filter FORWARD -i $BRIDGE ! -o $BRIDGE $tag -j ACCEPT" \
    "filter FORWARD ! -i $BRIDGE -o $BRIDGE $replies $tag -j ACCEPT" \
    "nat POSTROUTING -s ${SUBNET_PREFIX}.0/24 ! -o $BRIDGE $tag -j MASQUERADE"
}

ensure_network() {
  local mtu table chain rule
  mtu="$(uplink_mtu)"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE (${GATEWAY_IP}/24)"
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "${GATEWAY_IP}/24" dev "$BRIDGE"
  ip link set "$BRIDGE" mtu "$mtu" up
  # Bridged traffic passes iptables on this kernel; a FORWARD policy of DROP (dockerd sets one)
  # must not cut the hosts off from each other or from the mirrors.
  while read -r table chain rule; do
    # shellcheck disable=SC2086 # the rule is a list of words on purpose
    iptables -t "$table" -C "$chain" $rule 2>/dev/null || iptables -t "$table" -I "$chain" $rule
  done < <(iptables_rules)
  # NAT to the machine's uplink lets hosts reach the Debian mirrors and PyPI. Left on at `down`:
  # other sandboxes or a Docker engine may rely on it.
  sysctl -q -w net.ipv4.ip_forward=1
}

remove_iptables_rules() {
  local table chain rule
  while read -r table chain rule; do
    # shellcheck disable=SC2086
    while iptables -t "$table" -C "$chain" $rule 2>/dev/null; do
      iptables -t "$table" -D "$chain" $rule
    done
  done < <(iptables_rules)
}

# A network namespace with one veth leg on the bridge: the host's (or the probe's) only network.
ensure_netns() {
  local netns="$1" ip="$2" mtu
  mtu="$(uplink_mtu)"
  [[ -e "/run/netns/$netns" ]] || ip netns add "$netns"
  if ! ip link show "$netns" >/dev/null 2>&1; then
    ip -n "$netns" link del eth0 2>/dev/null || true
    ip link add "$netns" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$netns"
  fi
  ip link set "$netns" master "$BRIDGE" up
  ip -n "$netns" link set lo up
  ip -n "$netns" link set eth0 up
  ip -n "$netns" addr replace "${ip}/24" dev eth0
  ip -n "$netns" route replace default via "$GATEWAY_IP"
}

remove_netns() {
  local netns="$1"
  [[ -e "/run/netns/$netns" ]] && ip netns del "$netns"
  # Deleting a namespace frees its interfaces lazily: remove our leg now so the name is reusable.
  ip link del "$netns" 2>/dev/null || true
}

# The machine's resolvers, minus loopback ones (unreachable from a namespace).
upstream_resolvers() {
  awk '$1 == "nameserver" && $2 !~ /^127\./ && $2 !~ /:/ {print $2}' /etc/resolv.conf
}

check_name_resolution() {
  [[ -n "$(upstream_resolvers)" ]] ||
    die "no non-loopback IPv4 nameserver in /etc/resolv.conf for the hosts to use"
  timeout 15 ip netns exec "$PROBE_NETNS" getent ahostsv4 deb.debian.org >/dev/null ||
    die "deb.debian.org does not resolve in the sandbox (resolvers: $(upstream_resolvers | xargs))"
}

# --- hosts ---------------------------------------------------------------------------------------

# Write a file inside a host's root through chroot, so that symlinks resolve inside the host.
put_file() {
  local root="$1" path="$2" mode="$3"
  # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
  chroot "$root" sh -c 'rm -f "$1" && cat >"$1" && chmod "$2" "$1"' put_file "$path" "$mode"
}

etc_hosts() {
  local name="$1" line
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$name"
  printf '::1\t\tlocalhost ip6-localhost ip6-loopback\n\n'
  echo "# the sandbox's hosts"
  while IFS= read -r line; do
    printf '%s\t%s\n' "$(cat "$(host_dir "${line%%:*}")/ip")" "${line%%:*}"
  done <"${RUNTIME_DIR}/hosts.list"
}

# Once per host: identity (hostname, machine id, SSH host keys, addresses of its peers, resolvers)
# and the deploy user.
create_host_identity() {
  local name="$1" root="$2"
  echo "$name" | put_file "$root" /etc/hostname 0644
  tr -d '-' </proc/sys/kernel/random/uuid | put_file "$root" /etc/machine-id 0444
  chroot "$root" sh -c 'rm -f /etc/ssh/ssh_host_* && ssh-keygen -q -A' >/dev/null
  chroot "$root" useradd --create-home --shell /bin/bash deploy
  # '*' = no password but not locked: sshd refuses locked accounts even for keys.
  chroot "$root" usermod --password '*' deploy
  echo "deploy ALL=(ALL) NOPASSWD:ALL" | put_file "$root" /etc/sudoers.d/deploy 0440
  etc_hosts "$name" | put_file "$root" /etc/hosts 0644
  upstream_resolvers | sed 's/^/nameserver /' | put_file "$root" /etc/resolv.conf 0644
  # Nobody types on nspawn's passive console: a getty there can only fail and degrade the host.
  chroot "$root" ln -sfn /dev/null /etc/systemd/system/console-getty.service  # = systemctl mask
}

# At every boot: make sure the sandbox's current key opens the deploy account. Nothing else is
# touched, so that a restart is a reboot and not a re-provisioning of what the roles manage.
authorize_sandbox_key() {
  local root="$1"
  # shellcheck disable=SC2016 # $1 is the inner shell's argument
  chroot "$root" sh -c '
    keys=/home/deploy/.ssh/authorized_keys
    grep -qxF "$1" "$keys" 2>/dev/null && exit 0
    install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
    echo "$1" >>"$keys"
    chown deploy:deploy "$keys"
    chmod 0600 "$keys"' authorize_sandbox_key "$(cat "${SSH_KEY}.pub")"
}

ensure_host_root() {
  local name="$1" dir root lower layer
  dir="$(host_dir "$name")"
  root="$dir/root"
  mkdir -p "$dir/upper" "$dir/work" "$root"
  # A host keeps the layers it was made from (a newer base only applies to new hosts).
  [[ -f "$dir/lower" ]] || host_lower_layers >"$dir/lower"
  lower="$(cat "$dir/lower")"
  for layer in ${lower//:/ }; do
    [[ -d "$layer" ]] || die "host $name was made from $layer, which is gone: run down first"
  done
  mountpoint -q "$root" ||
    mount -t overlay "$(machine_name "$name")" \
      -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$root"
  if [[ ! -f "$dir/identity-created" ]]; then
    create_host_identity "$name" "$root"
    touch "$dir/identity-created"
  fi
}

host_running() {
  local name="$1"
  pid_is "$(recorded_pid "$(host_dir "$name")/pid")" "--machine=$(machine_name "$name") "
}

boot_host() {
  local name="$1" dir root machine
  dir="$(host_dir "$name")"
  root="$dir/root"
  machine="$(machine_name "$name")"
  authorize_sandbox_key "$root"
  seed_apt_archives "$dir"
  mkdir -p "$STATE_DIR/logs"
  # --register=no --keep-unit: there is no systemd on the machine to register with.
  # CAP_NET_ADMIN and a writable /proc/sys/net let the host run its own firewall (nftables)
  # inside its own namespace.
  SPAWN_CGROUP="$(host_cgroup "$name")" \
    spawn_daemon "$dir/pid" "$STATE_DIR/logs/$name.console.log" \
    env SYSTEMD_NSPAWN_API_VFS_WRITABLE=network systemd-nspawn --quiet --boot \
    --directory="$root" --machine="$machine" --hostname="$name" \
    --network-namespace-path="/run/netns/$machine" \
    --register=no --keep-unit --capability=CAP_NET_ADMIN --console=passive \
    --resolv-conf=off --link-journal=no \
    --bind="$dir/apt-archives:/var/cache/apt/archives" --bind="$CACHE_DIR/pip:/var/cache/pip"
}

# Booted = sshd answers for the deploy user and systemd has finished starting units.
wait_for_host() {
  local name="$1" ip deadline state
  ip="$(host_ip "$name")"
  deadline=$((SECONDS + 60))
  until ssh "${SSH_OPTIONS[@]}" "deploy@$ip" true 2>/dev/null; do
    process_alive "$(recorded_pid "$(host_dir "$name")/pid")" ||
      die "host $name stopped while booting: see $STATE_DIR/logs/$name.console.log"
    ((SECONDS < deadline)) ||
      die "host $name: no SSH after 60 s (see $STATE_DIR/logs/$name.console.log)"
    sleep 0.2
  done
  state="$(ssh "${SSH_OPTIONS[@]}" "deploy@$ip" \
    timeout 120 systemctl is-system-running --wait || true)"
  case "$state" in
    running) ;;
    degraded)
      warn "host $name is degraded; failed units: $(ssh "${SSH_OPTIONS[@]}" "deploy@$ip" \
        systemctl list-units --failed --plain --no-legend | awk '{print $1}' | xargs)"
      ;;
    *) die "host $name: systemd says '${state:-nothing}' instead of running" ;;
  esac
}

stop_host() {
  local name="$1" dir
  dir="$(host_dir "$name")"
  # A clean shutdown takes ~2 s; services such as Postgres may need longer to stop.
  stop_pid "$(recorded_pid "$dir/pid")" "--machine=$(machine_name "$name") " 30
  rm -f "$dir/pid"
  # Killing nspawn leaves the container's processes running: a host still stopping after the
  # wait (Postgres archiving to a backup host that is already gone) loses its power instead.
  kill_cgroup "$(host_cgroup "$name")"
  remove_cgroup "$(host_cgroup "$name")"
  harvest_apt_archives "$dir"
}

# --- the local ACME CA ---------------------------------------------------------------------------

pebble_bin() { echo "${CACHE_DIR}/pebble-${SUITE}/usr/bin/$1"; }

# What a recorded PID's command line must contain to still be our pebble / challtestsrv (the space
# keeps ".../pebble" from matching ".../pebble-challtestsrv").
acme_marker() {
  case "$1" in
    pebble) echo "$(pebble_bin pebble) " ;;
    challtestsrv) echo "$(pebble_bin pebble-challtestsrv) " ;;
  esac
}

acme_running() { pid_is "$(recorded_pid "$RUNTIME_DIR/pebble/$1.pid")" "$(acme_marker "$1")"; }

# Pebble's own listener needs a certificate: a throwaway CA of ours, which certbot must trust.
ensure_pebble_listener_certificate() {
  local dir="$RUNTIME_DIR/pebble"
  [[ -f "$dir/listener.pem" && -f "$PEBBLE_LISTENER_CA" ]] && return 0
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=flaskstack sandbox ${SANDBOX_ID} ACME listener CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/listener-ca.key" -out "$dir/listener-ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=${GATEWAY_IP}" -keyout "$dir/listener.key" -out "$dir/listener.csr" 2>/dev/null
  openssl x509 -req -in "$dir/listener.csr" -days 365 \
    -CA "$dir/listener-ca.pem" -CAkey "$dir/listener-ca.key" -out "$dir/listener.pem" -extfile <(
      printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:${GATEWAY_IP},DNS:pebble,DNS:localhost" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid:always"
    ) 2>/dev/null
  rm -f "$dir/listener.csr"
  cp "$dir/listener-ca.pem" "$PEBBLE_LISTENER_CA"
}

write_pebble_config() {
  local dir="$RUNTIME_DIR/pebble"
  cat >"$dir/pebble-config.json" <<EOF
{
  "pebble": {
    "listenAddress": "${GATEWAY_IP}:14000",
    "managementListenAddress": "${GATEWAY_IP}:15000",
    "certificate": "${dir}/listener.pem",
    "privateKey": "${dir}/listener.key",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "certificateValidityPeriod": 7776000,
    "externalAccountBindingRequired": false
  }
}
EOF
}

ensure_acme() {
  local site_ip="$1" dir="$RUNTIME_DIR/pebble" logs="$STATE_DIR/logs" deadline
  mkdir -p "$dir" "$logs"
  ensure_pebble_listener_certificate
  write_pebble_config
  if ! acme_running challtestsrv; then
    log "starting pebble-challtestsrv (DNS ${GATEWAY_IP}:8053: every name -> ${site_ip})"
    spawn_daemon "$dir/challtestsrv.pid" "$logs/challtestsrv.log" \
      "$(pebble_bin pebble-challtestsrv)" -dns01 "${GATEWAY_IP}:8053" \
      -defaultIPv4 "$site_ip" -defaultIPv6 "" -http01 "" -https01 "" -tlsalpn01 "" \
      -management "${GATEWAY_IP}:8055"
  fi
  if ! acme_running pebble; then
    if [[ -f "$ACME_ROOT" ]]; then
      log "restarting Pebble: it makes a NEW root CA and forgets every ACME account"
    else
      log "starting Pebble (ACME directory ${ACME_DIRECTORY})"
    fi
    # No artificial validation delays, no simulated bad nonces: fast, deterministic tests.
    spawn_daemon "$dir/pebble.pid" "$logs/pebble.log" \
      env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
      "$(pebble_bin pebble)" -config "$dir/pebble-config.json" -dnsserver "${GATEWAY_IP}:8053"
  fi
  deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null --cacert "$PEBBLE_LISTENER_CA" "$ACME_DIRECTORY" 2>/dev/null; do
    process_alive "$(recorded_pid "$dir/pebble.pid")" || die "Pebble exited: see $logs/pebble.log"
    ((SECONDS < deadline)) || die "Pebble does not answer at $ACME_DIRECTORY"
    sleep 0.2
  done
  fetch_acme_root
}

# The root is regenerated at each Pebble start: always serve clients the current one.
fetch_acme_root() {
  curl -fsS --cacert "$PEBBLE_LISTENER_CA" "${PEBBLE_MANAGEMENT}/roots/0" -o "${ACME_ROOT}.tmp"
  mv "${ACME_ROOT}.tmp" "$ACME_ROOT"
}

stop_acme() {
  local dir="$RUNTIME_DIR/pebble"
  stop_pid "$(recorded_pid "$dir/pebble.pid")" "$(acme_marker pebble)" 10
  stop_pid "$(recorded_pid "$dir/challtestsrv.pid")" "$(acme_marker challtestsrv)" 10
}

# --- the S3-compatible bucket ---------------------------------------------------------------------

s3_venv() { echo "${CACHE_DIR}/s3-server-venv"; }

# moto and gunicorn in a virtualenv of their own, from the hash-pinned lock (the same installer
# as every other virtualenv); rebuilt when the lock changes.
build_s3_server() {
  local venv lock="${REPO_DIR}/tools/sandbox/s3-server.txt"
  venv="$(s3_venv)"
  cmp -s "$lock" "$venv/lock.txt" && return 0
  log "building the S3 server's virtualenv (moto, gunicorn) in $venv"
  rm -rf "$venv"
  PYTHON=/usr/bin/python3 "${REPO_DIR}/deploy/venv.sh" "$venv" "$lock"
  cp "$lock" "$venv/lock.txt"
}

s3_marker() { echo "--bind ${S3_ENDPOINT} s3_server:app"; }
s3_running() { pid_is "$(recorded_pid "$RUNTIME_DIR/s3/s3.pid")" "$(s3_marker)"; }

ensure_s3() {
  local dir="$RUNTIME_DIR/s3" logs="$STATE_DIR/logs" deadline
  mkdir -p "$dir" "$logs"
  if ! s3_running; then
    log "starting the S3 server (https://${S3_ENDPOINT}/${S3_BUCKET}; moto, in memory)"
    # One worker: the buckets live in its memory. Threads: pgBackRest uploads in parallel.
    spawn_daemon "$dir/s3.pid" "$logs/s3.log" "$(s3_venv)/bin/gunicorn" \
      --chdir "${REPO_DIR}/tools/sandbox" --workers 1 --worker-class gthread --threads 8 \
      --no-control-socket \
      --certfile "$RUNTIME_DIR/pebble/listener.pem" --keyfile "$RUNTIME_DIR/pebble/listener.key" \
      --bind "$S3_ENDPOINT" s3_server:app
  fi
  local s3=(curl -fsS -o /dev/null --cacert "$PEBBLE_LISTENER_CA")
  deadline=$((SECONDS + 30))
  until "${s3[@]}" "https://${S3_ENDPOINT}/"; do
    process_alive "$(recorded_pid "$dir/s3.pid")" || die "the S3 server exited: see $logs/s3.log"
    ((SECONDS < deadline)) || die "the S3 server does not answer at https://${S3_ENDPOINT}/"
    sleep 0.2
  done
  "${s3[@]}" --head "https://${S3_ENDPOINT}/${S3_BUCKET}" 2>/dev/null ||
    "${s3[@]}" -X PUT "https://${S3_ENDPOINT}/${S3_BUCKET}"
}

stop_s3() { stop_pid "$(recorded_pid "$RUNTIME_DIR/s3/s3.pid")" "$(s3_marker)" 10; }

# --- the alert sink --------------------------------------------------------------------------------

alert_sink_marker() { echo "alert_sink.py --address ${GATEWAY_IP}"; }
alert_sink_running() {
  pid_is "$(recorded_pid "$RUNTIME_DIR/alert-sink/alert-sink.pid")" "$(alert_sink_marker)"
}

ensure_alert_sink() {
  local dir="$RUNTIME_DIR/alert-sink" logs="$STATE_DIR/logs" deadline
  mkdir -p "$dir" "$logs"
  if ! alert_sink_running; then
    log "starting the alert sink (smtp ${GATEWAY_IP}:${ALERT_SINK_SMTP_PORT}," \
      "webhook http://${GATEWAY_IP}:${ALERT_SINK_HTTP_PORT}/; records to $ALERT_RECORD)"
    spawn_daemon "$dir/alert-sink.pid" "$logs/alert-sink.log" /usr/bin/python3 \
      "${REPO_DIR}/tools/sandbox/alert_sink.py" --address "$GATEWAY_IP" \
      --smtp-port "$ALERT_SINK_SMTP_PORT" --http-port "$ALERT_SINK_HTTP_PORT" --record "$ALERT_RECORD"
  fi
  deadline=$((SECONDS + 10))
  until curl -fsS -o /dev/null -X POST --data '{}' "http://${GATEWAY_IP}:${ALERT_SINK_HTTP_PORT}/ping"; do
    process_alive "$(recorded_pid "$dir/alert-sink.pid")" ||
      die "the alert sink exited: see $logs/alert-sink.log"
    ((SECONDS < deadline)) || die "the alert sink does not answer on ${GATEWAY_IP}:${ALERT_SINK_HTTP_PORT}"
    sleep 0.2
  done
}

stop_alert_sink() {
  stop_pid "$(recorded_pid "$RUNTIME_DIR/alert-sink/alert-sink.pid")" "$(alert_sink_marker)" 10
}

# --- descriptions for Ansible, tests and people --------------------------------------------------

# hosts.yml (for Ansible) and sandbox.json (for tests and people) from the recorded hosts.
write_descriptions() {
  local topology="$1" name line
  mkdir -p "$INVENTORY_DIR"
  if [[ "$SANDBOX_ID" != 0 ]]; then
    # The committed group_vars apply to every sandbox's inventory.
    ln -sfn "${REPO_DIR}/ansible/inventories/sandbox/group_vars" "$INVENTORY_DIR/group_vars"
  fi
  while IFS= read -r line; do
    name="${line%%:*}"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(host_ip "$name")" "${line#*:}" \
      "$(machine_name "$name")" "$(recorded_pid "$(host_dir "$name")/pid")"
  done <"${RUNTIME_DIR}/hosts.list" |
    /usr/bin/python3 "${REPO_DIR}/tools/sandbox/describe.py" \
      --repo-dir="$REPO_DIR" --inventory-dir="$INVENTORY_DIR" --state-dir="$STATE_DIR" \
      --topology="$topology" --domain="$DOMAIN" --ca-cert="$ACME_ROOT" \
      --acme-server="$ACME_DIRECTORY" --acme-server-ca="$PEBBLE_LISTENER_CA" \
      --acme-email="admin@${DOMAIN}" --ssh-user=deploy --ssh-key="$SSH_KEY" \
      --probe-netns="$PROBE_NETNS" --probe-ip="$PROBE_IP" --sandbox-id="$SANDBOX_ID" \
      --s3-endpoint="$S3_ENDPOINT" --s3-bucket="$S3_BUCKET" --alert-record="$ALERT_RECORD" \
      --alert-smtp="${GATEWAY_IP}:${ALERT_SINK_SMTP_PORT}" \
      --alert-webhook="http://${GATEWAY_IP}:${ALERT_SINK_HTTP_PORT}/alerts" \
      --floating-ip="$(floating_ip)"
}

print_summary() {
  [[ -f "$STATE_DIR/sandbox.json" ]] || die "sandbox ${SANDBOX_ID} is not up"
  local site_ip name line
  site_ip="$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["site_ip"])' \
    "$STATE_DIR/sandbox.json")"
  echo
  echo "Sandbox ${SANDBOX_ID} ($(cat "$RUNTIME_DIR/topology")): https://${DOMAIN}/"
  while IFS= read -r line; do
    name="${line%%:*}"
    printf '  %-8s %-14s %s\n' "$name" "$(host_ip "$name")" "${line#*:}"
  done <"${RUNTIME_DIR}/hosts.list"
  if [[ -n "$(floating_ip)" ]]; then echo "  floating   ${site_ip}     the edges' shared address"; fi
  echo "  reach it:  curl --resolve ${DOMAIN}:443:${site_ip} --cacert ${ACME_ROOT}" \
    "https://${DOMAIN}/"
  local prefix=""
  [[ "$SANDBOX_ID" == 0 ]] || prefix="SANDBOX_ID=${SANDBOX_ID} "
  echo "  a shell:   ${prefix}tools/sandbox/sandbox.sh ssh $(known_hosts | head -1)"
  echo "  inventory: $(realpath --relative-to="$REPO_DIR" "$INVENTORY_DIR")" \
    "  (ACME: ${ACME_DIRECTORY})"
  echo "  described in $STATE_DIR/sandbox.json"
}

# --- commands ------------------------------------------------------------------------------------

cmd_up() {
  local topology="${1:-single}" started=$SECONDS line name index=0 edge_ip=""
  topology_hosts "$topology" >/dev/null
  if [[ -f "$RUNTIME_DIR/topology" && "$(cat "$RUNTIME_DIR/topology")" != "$topology" ]]; then
    die "sandbox ${SANDBOX_ID} is up with topology '$(cat "$RUNTIME_DIR/topology")': run down first"
  fi
  ensure_root
  ensure_host_packages
  with_lock "${CACHE_DIR}/.lock" prepare_caches
  mkdir -p "$RUNTIME_DIR/hosts" "$STATE_DIR/logs"
  # A state directory that ignores itself, whatever the repository's .gitignore says.
  echo '*' >"$STATE_DIR/.gitignore"
  echo "$topology" >"$RUNTIME_DIR/topology"
  topology_hosts "$topology" >"$RUNTIME_DIR/hosts.list"
  if [[ ! -f "$SSH_KEY" ]]; then
    ssh-keygen -q -t ed25519 -N '' -C "flaskstack-sandbox-${SANDBOX_ID}" -f "$SSH_KEY"
  fi

  ensure_network
  ensure_netns "$PROBE_NETNS" "$PROBE_IP"
  check_name_resolution
  while IFS= read -r line; do
    name="${line%%:*}"
    mkdir -p "$(host_dir "$name")"
    echo "${SUBNET_PREFIX}.$((11 + index))" >"$(host_dir "$name")/ip"
    index=$((index + 1))
    if [[ -z "$edge_ip" && ",${line#*:}," == *,edge,* ]]; then edge_ip="$(host_ip "$name")"; fi
  done <"$RUNTIME_DIR/hosts.list"

  for name in $(known_hosts); do
    if host_running "$name"; then
      log "host $name ($(host_ip "$name")) is already running"
      continue
    fi
    log "creating host $name ($(host_ip "$name"))"
    ensure_netns "$(machine_name "$name")" "$(host_ip "$name")"
    ensure_host_root "$name"
    boot_host "$name"
  done
  for name in $(known_hosts); do
    wait_for_host "$name"
    log "host $name is up: $(host_ip "$name"), $(host_groups "$name")"
  done

  local floating
  floating="$(floating_ip)"
  ensure_acme "${floating:-$edge_ip}"
  ensure_s3
  ensure_alert_sink
  write_descriptions "$topology"
  print_summary
  echo "  up in $((SECONDS - started)) s"
}

# In parallel: each clean shutdown takes seconds.
stop_hosts() {
  local name pid stopping=()
  for name in "$@"; do
    if host_running "$name"; then log "stopping host $name"; fi
    stop_host "$name" &
    stopping+=($!)
  done
  for pid in "${stopping[@]}"; do wait "$pid"; done
}

cmd_down() {
  local started=$SECONDS name netns mount hierarchy first=() last=()
  ensure_root
  # The backup hosts last: a db host's Postgres stops once it has archived its last WAL there,
  # and would otherwise wait for a repository already gone until it is killed.
  for name in $(known_hosts); do
    if [[ ",$(host_groups "$name" 2>/dev/null)," == *,backup,* ]]; then
      last+=("$name")
    else
      first+=("$name")
    fi
  done
  stop_hosts "${first[@]}"
  stop_hosts "${last[@]}"
  stop_acme
  stop_s3
  stop_alert_sink
  # Every mount under our runtime directory (the hosts' overlays), innermost first.
  while IFS= read -r mount; do
    umount "$mount"
  done < <(findmnt -rn -o TARGET | grep -F "${RUNTIME_DIR}/" | sort -r)
  # Names are derived from SANDBOX_ID: sweep them even if the runtime records are gone.
  while IFS= read -r netns; do
    remove_netns "$netns"
  done < <(ip netns list | awk -v prefix="${NAME_PREFIX}-" 'index($1, prefix) == 1 {print $1}')
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "removing bridge $BRIDGE and its firewall rules"
    ip link del "$BRIDGE"
  fi
  remove_iptables_rules
  remove_cgroup "flaskstack-sandbox/${SANDBOX_ID}"
  for hierarchy in $(cgroup_hierarchies); do
    rmdir "$hierarchy/flaskstack-sandbox" 2>/dev/null || true  # unless another sandbox is up
  done
  rm -rf --one-file-system "$RUNTIME_DIR" "$STATE_DIR"
  if [[ "$SANDBOX_ID" == 0 ]]; then rm -f "$INVENTORY_DIR/hosts.yml"; fi
  log "sandbox ${SANDBOX_ID} is down ($((SECONDS - started)) s; caches kept in ${CACHE_DIR})"
}

cmd_status() {
  local name state dir
  if [[ ! -f "$RUNTIME_DIR/hosts.list" ]]; then
    echo "sandbox ${SANDBOX_ID}: down"
    return 0
  fi
  echo "sandbox ${SANDBOX_ID}: topology $(cat "$RUNTIME_DIR/topology"), bridge $BRIDGE"
  for name in $(known_hosts); do
    dir="$(host_dir "$name")"
    state="stopped"
    if host_running "$name"; then state="running (nspawn PID $(cat "$dir/pid"))"; fi
    printf '  %-8s %-14s %-18s %s\n' "$name" "$(host_ip "$name")" "$(host_groups "$name")" "$state"
  done
  for name in pebble challtestsrv; do
    if acme_running "$name"; then
      printf '  %-13s running (PID %s)\n' "$name" "$(cat "$RUNTIME_DIR/pebble/$name.pid")"
    else
      printf '  %-13s stopped\n' "$name"
    fi
  done
  if s3_running; then
    printf '  %-13s running (PID %s)\n' s3 "$(cat "$RUNTIME_DIR/s3/s3.pid")"
  else
    printf '  %-13s stopped\n' s3
  fi
  if alert_sink_running; then
    printf '  %-13s running (PID %s)\n' alert-sink "$(cat "$RUNTIME_DIR/alert-sink/alert-sink.pid")"
  else
    printf '  %-13s stopped\n' alert-sink
  fi
}

cmd_ssh() {
  (($# >= 1)) || die "usage: sandbox.sh ssh HOST [COMMAND…]"
  local ip
  ip="$(host_ip "$1")"
  shift
  if (($# == 0)) && [[ -t 0 ]]; then
    exec ssh -t "${SSH_OPTIONS[@]}" "deploy@$ip"
  fi
  exec ssh "${SSH_OPTIONS[@]}" "deploy@$ip" "$@"
}

cmd_stop() {
  (($# == 1)) || die "usage: sandbox.sh stop HOST"
  ensure_root
  host_ip "$1" >/dev/null
  log "stopping host $1"
  stop_host "$1"
}

cmd_start() {
  (($# == 1)) || die "usage: sandbox.sh start HOST"
  local name="$1"
  ensure_root
  host_ip "$name" >/dev/null
  if host_running "$name"; then
    log "host $name is already running"
    return 0
  fi
  log "booting host $name"
  ensure_netns "$(machine_name "$name")" "$(host_ip "$name")"
  ensure_host_root "$name"
  boot_host "$name"
  wait_for_host "$name"
  write_descriptions "$(cat "$RUNTIME_DIR/topology")"
}

# A power cut: nothing on the host gets to say goodbye (a leader lock stays until it expires).
cmd_kill() {
  (($# == 1)) || die "usage: sandbox.sh kill HOST"
  ensure_root
  host_ip "$1" >/dev/null
  log "cutting host $1's power"
  kill_cgroup "$(host_cgroup "$1")"
  stop_host "$1"
}

# The PID of a running host's init (the nspawn process's only child), to enter its namespaces.
host_init_pid() {
  local nspawn init
  host_running "$1" || die "host $1 is not running"
  nspawn="$(recorded_pid "$(host_dir "$1")/pid")"
  init="$(awk '{print $1}' "/proc/$nspawn/task/$nspawn/children")"
  [[ -n "$init" ]] || die "host $1 has no init process"
  echo "$init"
}

# The host's own nft, in its namespaces: this machine's older nft may not read the host's ruleset.
host_nft() {
  local init
  init="$(host_init_pid "$1")"
  shift
  nsenter --target "$init" --mount --net -- nft "$@"
}

# A network partition: the host runs on, cut off from every other host, by a table of our own
# in its namespace (the host's own firewall, which its deploys replace, is left alone).
readonly PARTITION_TABLE="flaskstack_sandbox_partition"
cmd_partition() {
  (($# == 1)) || die "usage: sandbox.sh partition HOST"
  ensure_root
  log "cutting host $1 off the network"
  host_nft "$1" -f - <<EOF
table inet ${PARTITION_TABLE} {
  chain input { type filter hook input priority -200; policy drop; iif "lo" accept; }
  chain output { type filter hook output priority -200; policy drop; oif "lo" accept; }
}
EOF
}

cmd_exec() {
  (($# >= 2)) || die "usage: sandbox.sh exec HOST COMMAND…"
  local init
  ensure_root
  init="$(host_init_pid "$1")"
  shift
  exec nsenter --target "$init" --mount --uts --ipc --net --pid -- "$@"
}

cmd_heal() {
  (($# == 1)) || die "usage: sandbox.sh heal HOST"
  ensure_root
  log "joining host $1 to the network again"
  host_nft "$1" delete table inet "$PARTITION_TABLE" 2>/dev/null || true
}

# A reboot as the tests need it: services enabled at boot must come back by themselves.
cmd_restart() {
  (($# == 1)) || die "usage: sandbox.sh restart HOST"
  local started=$SECONDS
  cmd_stop "$1"
  cmd_start "$1"
  log "host $1 is back ($((SECONDS - started)) s)"
}

# A lost host's replacement, as a provider would hand it over: the old one loses its power, its
# disk (the overlay's upper layer) and identity go, the base layers stay.
cmd_replace() {
  (($# == 1)) || die "usage: sandbox.sh replace HOST"
  local name="$1" started=$SECONDS dir
  ensure_root
  host_ip "$name" >/dev/null
  dir="$(host_dir "$name")"
  if host_running "$name"; then
    log "cutting host $name's power"
    kill_cgroup "$(host_cgroup "$name")"
    stop_host "$name"
  fi
  log "throwing host $name's disk away"
  if mountpoint -q "$dir/root"; then umount "$dir/root"; fi
  rm -rf --one-file-system "$dir/upper" "$dir/work" "$dir/lower" "$dir/identity-created"
  cmd_start "$name"
  log "host $name was replaced by an empty one ($((SECONDS - started)) s)"
}

cmd_ca_root() {
  [[ -f "$ACME_ROOT" ]] || die "sandbox ${SANDBOX_ID} is not up"
  fetch_acme_root 2>/dev/null || warn "Pebble did not answer; $ACME_ROOT may be stale"
  echo "$ACME_ROOT"
}

cmd_layers() {
  ensure_root
  # Progress to stderr: stdout is the answer (bench: tools/bench/hosts-python.sh).
  ensure_host_packages >&2
  with_lock "${CACHE_DIR}/.lock" prepare_caches >&2
  host_lower_layers
}

main() {
  (($# >= 1)) || usage
  local command="$1"
  shift
  case "$command" in
    up) with_lock "/run/lock/flaskstack-sandbox-${SANDBOX_ID}.lock" cmd_up "$@" ;;
    down) with_lock "/run/lock/flaskstack-sandbox-${SANDBOX_ID}.lock" cmd_down ;;
    restart | stop | start | replace | kill | partition | heal)
      with_lock "/run/lock/flaskstack-sandbox-${SANDBOX_ID}.lock" "cmd_$command" "$@"
      ;;
    status) cmd_status ;;
    summary) print_summary ;;
    ssh) cmd_ssh "$@" ;;
    exec) cmd_exec "$@" ;;
    ca-root) cmd_ca_root ;;
    layers) cmd_layers ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
