#!/bin/bash
# Entrypoint of the app image (Dockerfile). One image, one command per role:
#
#   web       (default) gunicorn with deploy/gunicorn.conf.py, as on the Ansible hosts;
#             RUN_MIGRATIONS=1 upgrades the database first (for a single-container setup)
#   worker    the app's worker (`worker` in flaskstack.toml; the blog's RQ worker)
#   release   once per deployment, before the new code takes traffic: database migrations
#             (`migrate`), then the static files (`static`, linked as deploy/static) copied to
#             /srv/static for nginx (a shared volume)
#   anything else runs as given, e.g. `flask --app app create-admin NAME EMAIL`
#
# Every role first waits for Postgres and Redis with bounded exponential backoff
# (WAIT_FOR_SERVICES_TIMEOUT seconds; unset or empty: `flask wait-for-services`' own default),
# so start-up order and a slow database never crash-loop the container; after the timeout it
# exits non-zero and says why. .env-template documents both variables.
set -euo pipefail

readonly STATIC_SOURCE=/srv/flaskstack/deploy/static
readonly STATIC_TARGET=/srv/static

wait_for_services() {
  local args=()
  if [[ -n "${WAIT_FOR_SERVICES_TIMEOUT:-}" ]]; then
    args=(--timeout "$WAIT_FOR_SERVICES_TIMEOUT")
  fi
  flask --app app wait-for-services "${args[@]}"
}

migrate() {
  echo "flaskstack: upgrading the database schema"
  python deploy/manifest.py run migrate
}

publish_static() {
  # Copy over, never delete: pages rendered by the previous release (still in browsers and
  # caches) keep finding their fingerprinted files. Each release's files are a few kB.
  echo "flaskstack: publishing static files to $STATIC_TARGET"
  cp -R --no-preserve=ownership "$STATIC_SOURCE/." "$STATIC_TARGET/"
}

role="${1:-web}"
case "$role" in
  web)
    wait_for_services
    if [[ "${RUN_MIGRATIONS:-0}" == 1 ]]; then
      migrate
    fi
    exec gunicorn -c deploy/gunicorn.conf.py
    ;;
  worker)
    wait_for_services
    exec python deploy/manifest.py run worker
    ;;
  release)
    wait_for_services
    migrate
    publish_static
    echo "flaskstack: release tasks done"
    ;;
  *)
    exec "$@"
    ;;
esac
