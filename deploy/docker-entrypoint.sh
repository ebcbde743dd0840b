#!/bin/bash
# Entrypoint of the app image (Dockerfile). One image, one command per role:
#
#   web       (default) gunicorn with deploy/gunicorn.conf.py, as on the Ansible hosts;
#             RUN_MIGRATIONS=1 upgrades the database first (for a single-container setup)
#   worker    the app's worker (`worker` in flaskstack.toml; the blog's RQ worker); an app
#             without one leaves the container idle, so one docker-compose.yml serves both
#   worker-check  the worker's healthcheck (`worker_check`; none declared: healthy)
#   scheduler the app's [[scheduled]] jobs at their times, one at a time (deploy/scheduler.py;
#             the scheduler image, target "scheduler"); none declared: idle
#   scheduler-check  its healthcheck: unhealthy while a job's last run failed
#   release   once per deployment, before the new code takes traffic: database migrations
#             (`migrate`), then the static files (`static`, linked as deploy/static) copied to
#             /srv/static for nginx (a shared volume)
#   metrics   the app's Prometheus metrics on :9200 (deploy/metrics.py: what gunicorn's workers
#             count in PROMETHEUS_MULTIPROC_DIR, and the app's own collector); an app whose lock
#             lacks prometheus-client leaves the container idle
#   metrics-check  its healthcheck (idle: healthy)
#   anything else runs as given, e.g. `flask --app app create-admin NAME EMAIL`
#
# Every role first waits until the hosts of DATABASE_URL and REDIS_URL accept connections, with
# bounded exponential backoff (WAIT_FOR_SERVICES_TIMEOUT seconds; unset or empty: 60), so
# start-up order and a slow database never crash-loop the container; after the timeout it
# exits non-zero and says why (deploy/wait-for-services.py). .env-template documents both
# variables.
set -euo pipefail

readonly STATIC_SOURCE=/srv/flaskstack/deploy/static
readonly STATIC_TARGET=/srv/static
readonly METRICS_LISTEN_PORT=9200

wait_for_services() {
  python deploy/wait-for-services.py "${WAIT_FOR_SERVICES_TIMEOUT:-}"
}

migrate() {
  echo "flaskstack: upgrading the database schema"
  python deploy/manifest.py run migrate
}

idle() {
  # As PID 1, sleep would ignore the SIGTERM of a stop: bash waits and answers it.
  trap 'exit 0' TERM INT
  sleep infinity &
  wait
}

has_metrics_client() {
  python -c 'import prometheus_client' 2>/dev/null
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
    if [[ -z "$(python deploy/manifest.py get worker)" ]]; then
      echo "flaskstack: the app declares no worker; this container stays idle"
      idle
    fi
    wait_for_services
    exec python deploy/manifest.py run worker
    ;;
  worker-check)
    exec python deploy/manifest.py run worker_check
    ;;
  scheduler)
    wait_for_services
    exec python deploy/scheduler.py
    ;;
  scheduler-check)
    exec python deploy/scheduler.py check
    ;;
  metrics)
    # No wait for Postgres and Redis: the metrics answer without them.
    if ! has_metrics_client; then
      echo "flaskstack: the app's lock lacks prometheus-client: no metrics; this container stays idle"
      idle
    fi
    exec python deploy/metrics.py --bind "0.0.0.0:$METRICS_LISTEN_PORT"
    ;;
  metrics-check)
    has_metrics_client || exit 0
    exec python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$METRICS_LISTEN_PORT/metrics', timeout=8)"
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
