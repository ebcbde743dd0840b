#!/usr/bin/env bash
# Install the three audit scanners that tools/scan/scan.sh runs, into a cache outside the repository
# so that a warm machine pays nothing and never touches the network:
#   - testssl.sh 3.2 from Debian trixie (bookworm's 3.0 has no rating), unpacked, not installed:
#     the machine's apt sources and dpkg database are left alone;
#   - the Mozilla HTTP Observatory, pinned by tools/scan/package-lock.json, via npm ci with the
#     npm pinned by tools/scan/npm/package-lock.json;
#   - sslyze comes from the project virtualenv (requirements-dev.txt): only checked here.
# Debian packages testssl.sh needs at run time are installed when missing.
#
# Usage: tools/scan/install.sh        (SCAN_CACHE overrides /var/cache/flaskstack-scan)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${SCAN_CACHE:-/var/cache/flaskstack-scan}"
venv_python="${SCAN_PYTHON:-$repo/.venv/bin/python}"
trixie_mirror="${SCAN_TRIXIE_MIRROR:-http://deb.debian.org/debian}"

# What testssl.sh 3.2 calls at run time (hexdump is in bsdextrautils, dig in bind9-dnsutils).
testssl_runtime_packages=(openssl bsdextrautils procps bind9-dnsutils coreutils)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scan install: %s\n' "$*" >&2; exit 1; }

install_missing_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' ||
      missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing Debian packages: ${missing[*]}"
  local apt_get=(apt-get -o DPkg::Lock::Timeout=600 -q)
  "${apt_get[@]}" update >/dev/null
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y --no-install-recommends "${missing[@]}" \
    >/dev/null
}

# apt-get against a private trixie source list, state and cache: nothing of the machine's apt
# configuration changes, and the trixie archive keys shipped by debian-archive-keyring verify it.
trixie_apt() {
  local dir="$cache/apt"
  mkdir -p "$dir/sources" "$dir/lists/partial" "$dir/archives/partial"
  cat >"$dir/sources/trixie.sources" <<EOF
Types: deb
URIs: $trixie_mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-trixie-stable.gpg /usr/share/keyrings/debian-archive-trixie-automatic.gpg
EOF
  apt-get -q \
    -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$dir/sources" \
    -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir" -o Dir::Cache::Archives="$dir/archives" \
    -o APT::Sandbox::User=root \
    "$@"
}

install_testssl() {
  local dest="$cache/testssl" stamp="$cache/testssl/.deb"
  if [[ -x "$dest/usr/bin/testssl" && -s "$stamp" ]]; then
    return 0
  fi
  log "fetching testssl.sh from Debian trixie"
  trixie_apt update >/dev/null
  local download="$cache/download"
  rm -rf "$download" && mkdir -p "$download"
  (cd "$download" && trixie_apt download testssl.sh >/dev/null)
  local deb
  deb="$(find "$download" -name 'testssl.sh_*.deb' -print -quit)"
  [[ -n "$deb" ]] || die "apt-get download testssl.sh/trixie produced no package"
  local version
  version="$(dpkg-deb -f "$deb" Version)"
  dpkg --compare-versions "$version" ge 3.2 ||
    die "testssl.sh $version from trixie is older than 3.2 (no rating)"
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  dpkg-deb -x "$deb" "$dest.new"
  basename "$deb" >"$dest.new/.deb"
  rm -rf "$dest" && mv "$dest.new" "$dest"
  # The indexes (20 MB) and the .deb were only needed to find and unpack the package once.
  rm -rf "$download" "$cache/apt/lists"
  log "testssl.sh $version unpacked into $dest"
}

# The npm that installs the scanners' tree is pinned too (tools/scan/npm/package-lock.json): the
# machine's own npm only installs that one package, checked against its integrity hash.
install_npm() {
  local dest="$cache/npm" want have=""
  want="$(cat "$here/npm/package.json" "$here/npm/package-lock.json" | sha256sum | cut -d' ' -f1)"
  [[ -f "$dest/.lock-sha256" ]] && have="$(cat "$dest/.lock-sha256")"
  if [[ "$want" == "$have" && -f "$dest/node_modules/npm/bin/npm-cli.js" ]]; then
    return 0
  fi
  log "installing the pinned npm (tools/scan/npm/package-lock.json)"
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  cp "$here/npm/package.json" "$here/npm/package-lock.json" "$dest.new/"
  (cd "$dest.new" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$dest.new/.lock-sha256"
  rm -rf "$dest" && mv "$dest.new" "$dest"
}

pinned_npm() { node "$cache/npm/node_modules/npm/bin/npm-cli.js" "$@"; }

install_observatory() {
  local dest="$cache/observatory" want have=""
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    install_missing_debian_packages nodejs npm
  fi
  local node_major
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  ((node_major >= 20)) ||
    die "the HTTP Observatory needs Node.js >= 20, found $(node --version) (Debian 13 has 20)"
  want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
  [[ -f "$dest/.lock-sha256" ]] && have="$(cat "$dest/.lock-sha256")"
  if [[ "$want" == "$have" && -f "$dest/node_modules/@mdn/mdn-http-observatory/src/scan.js" ]]; then
    return 0
  fi
  install_npm
  log "installing the HTTP Observatory (npm ci, pinned by tools/scan/package-lock.json)"
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  cp "$here/package.json" "$here/package-lock.json" "$dest.new/"
  # --ignore-scripts: the postinstall step downloads the HSTS preload list from the internet; an
  # empty list only means no site is treated as preloaded, which this stack does not rely on.
  (cd "$dest.new" && pinned_npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  echo '{}' >"$dest.new/node_modules/@mdn/mdn-http-observatory/conf/hsts-preload.json"
  echo "$want" >"$dest.new/.lock-sha256"
  rm -rf "$dest" && mv "$dest.new" "$dest"
  log "HTTP Observatory installed into $dest"
}

check_sslyze() {
  [[ -x "$venv_python" ]] || die "no virtualenv at $venv_python: run \`make venv\` first"
  "$venv_python" -c 'import sslyze' 2>/dev/null ||
    die "sslyze is not installed in $venv_python (it belongs in requirements-dev.txt)"
}

main() {
  mkdir -p "$cache"
  # Two scans started together must not unpack into the same directory at once.
  exec {lock_fd}>"$cache/.install.lock"
  flock "$lock_fd"
  install_missing_debian_packages "${testssl_runtime_packages[@]}"
  install_testssl
  install_observatory
  check_sslyze
}

main "$@"
