#!/usr/bin/env bash
# `make compose-app APP=<dir or git URL@ref>`: another app for the Compose stack. Builds its
# release with deploy/build-release.sh (the very release `make deploy APP=…` puts on hosts) and
# unpacks it at .build/compose/app, the directory the Dockerfile builds the app from when .env
# says APP_DIR=.build/compose/app. Run it again after changing the app, then `make up`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ -n "${APP:-}" ]] || { echo "compose-app: APP=<dir or git URL@ref> is required" >&2; exit 2; }
readonly target=.build/compose/app

archive="$(deploy/build-release.sh)"
release="$(basename "$archive" .tar.gz)"
rm -rf "$target.new"
mkdir -p "$target.new"
tar -xzf "$archive" -C "$target.new"
rm -rf "$target"
mv "$target.new" "$target"

echo "==> $APP: release ${release#flaskstack-} unpacked at $target"
if grep -qs "^APP_DIR=$target\$" .env; then
  echo "    .env builds it: make up"
else
  echo "    add APP_DIR=$target to .env, then: make up"
fi
