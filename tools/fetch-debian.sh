#!/usr/bin/env bash
# Unpack Debian packages of another suite into a directory, without touching the machine's apt
# sources or installing anything: the tools the hosts run (trixie) for this machine (bookworm).
#
#   tools/fetch-debian.sh SUITE DEST PACKAGE...
#
# Idempotent: DEST/.packages records what it holds; a different list unpacks afresh.
set -euo pipefail

(($# >= 3)) || { sed -n '2,7s/^# \{0,1\}//p' "$0" >&2; exit 2; }
suite="$1" dest="$2"
shift 2
readonly MIRROR="http://deb.debian.org/debian"

if [[ -f "$dest/.packages" && "$(cat "$dest/.packages")" == "$suite $*" ]]; then
  exit 0
fi
echo "==> fetching $* from Debian $suite (once; kept in $dest)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $suite main" \
  >"$work/sources.list"
apt_options=(
  -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Get::List-Cleanup=0
)
apt-get "${apt_options[@]}" update -q >"$work/apt.log" 2>&1 ||
  { echo "apt-get update for $suite failed: $(tail -3 "$work/apt.log")" >&2; exit 1; }
(cd "$work" && apt-get "${apt_options[@]}" download -q "$@" >>apt.log 2>&1) ||
  { echo "apt-get download $* failed: $(tail -3 "$work/apt.log")" >&2; exit 1; }
rm -rf "${dest}.tmp"
mkdir -p "${dest}.tmp"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "${dest}.tmp"; done
echo "$suite $*" >"${dest}.tmp/.packages"
rm -rf "$dest"
mv "${dest}.tmp" "$dest"
