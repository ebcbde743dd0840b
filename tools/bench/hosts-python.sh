#!/usr/bin/env bash
# The hosts' Python for `make bench`: a root filesystem layer with what the app role puts on a
# Debian 13 host (python3, python3-venv) and the release's virtualenv, built by deploy/venv.sh
# from requirements.txt as a host builds it. Cached beside the sandbox's base layers, keyed by
# them and by the files that make the virtualenv; built once, outside the bench's network
# namespace (it needs Debian's and PyPI's mirrors). Prints the overlay lowerdir, top first.
#
#   tools/bench/hosts-python.sh        (root; the bench mounts it in its own mount namespace)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache_dir="${SANDBOX_CACHE_DIR:-/var/cache/flaskstack-sandbox}"
# Where the virtualenv is inside the layer (tools/bench/stack.py runs gunicorn from it).
readonly VENV=/opt/flaskstack-bench/venv
readonly INPUTS=(deploy/venv.sh requirements.txt requirements-pip.txt)
# Bump when the recipe below changes, so that a new layer is built.
readonly RECIPE=2

log() { printf 'bench: %s\n' "$*" >&2; }

# A host's environment in the chroot, not this machine's (its PIP_* settings name its paths).
on_host() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# Runs in a private mount namespace (see build): its mounts end with it, also on failure.
install_in_namespace() {
  local lower="$1" scratch="$2" apt=(apt-get -q -o Dir::Cache::Archives=/tmp/archives)
  root="$scratch/root"
  mount -t overlay flaskstack-bench-python \
    -o "lowerdir=$lower,upperdir=$scratch/upper,workdir=$scratch/work" "$root"
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  mkdir -p "$root/var/cache/pip" "$root/tmp/archives/partial" "$root/opt/flaskstack-bench"
  mount --bind "$cache_dir/pip" "$root/var/cache/pip"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  (cd "$repo_dir" && cp --parents "${INPUTS[@]}" "$root/opt/flaskstack-bench/")
  on_host "${apt[@]}" update
  on_host DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
    python3-venv
  on_host PYTHON=/usr/bin/python3 /opt/flaskstack-bench/deploy/venv.sh "$VENV" \
    /opt/flaskstack-bench/requirements.txt
  on_host "$VENV/bin/python" -m compileall -q "$VENV" >/dev/null
  rm -rf "$root"/var/lib/apt/lists/* "$root/tmp/archives" "$root/etc/resolv.conf"
}

build() {
  local lower="$1" layer="$2" scratch="$2.building"
  rm -rf --one-file-system "$scratch"
  mkdir -p "$scratch/upper" "$scratch/work" "$scratch/root"
  log "building the hosts' Python layer (once; cached in $layer)"
  unshare --mount --propagation private "${BASH_SOURCE[0]}" --install "$lower" "$scratch" \
    >"$cache_dir/bench-python.log" 2>&1 ||
    { tail -20 "$cache_dir/bench-python.log" >&2; return 1; }
  mv "$scratch/upper" "$layer"
  rm -rf --one-file-system "$scratch"
  # Layers of earlier lock files or base layers are never used again.
  find "$cache_dir" -maxdepth 1 -name 'bench-python-*' ! -name "$(basename "$layer")" \
    -exec rm -rf --one-file-system {} +
}

main() {
  if [[ "${1:-}" == --install ]]; then
    install_in_namespace "$2" "$3"
    return
  fi
  local base_layers key layer
  base_layers="$("$repo_dir/tools/sandbox/sandbox.sh" layers)"
  key="$({
    echo "$RECIPE $base_layers"
    (cd "$repo_dir" && sha256sum "${INPUTS[@]}")
  } | sha256sum | cut -c1-12)"
  layer="$cache_dir/bench-python-$key"
  # Concurrent benches build the layer once.
  exec 9>"$cache_dir/.bench-python.lock"
  flock 9
  [[ -d "$layer" ]] || build "$base_layers" "$layer"
  echo "$layer:$base_layers"
}

main "$@"
