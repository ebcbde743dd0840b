#!/bin/bash
# The parts of the official postgres image's entrypoint the stack uses: on an empty data
# directory, initdb with POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_INITDB_ARGS, create
# POSTGRES_DB, run /docker-entrypoint-initdb.d/* against a server that listens on its unix
# socket only, then start the real server on every address, as the postgres user.
set -euo pipefail

if [[ "${1:-}" == postgres && "$(id -u)" == 0 ]]; then
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ "${1:-}" == postgres && ! -s "$PGDATA/PG_VERSION" ]]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  export POSTGRES_USER="${POSTGRES_USER:-postgres}"
  export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, as in the original
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    ${POSTGRES_INITDB_ARGS:-}
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" \
    >>"$PGDATA/pg_hba.conf"
  pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses=''" start
  if [[ "$POSTGRES_DB" != postgres ]]; then
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
      --command "CREATE DATABASE \"$POSTGRES_DB\""
  fi
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sh) echo "running $script"; "$script" ;;
      *.sql) echo "running $script"; psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
        --dbname "$POSTGRES_DB" --file "$script" ;;
    esac
  done
  pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop
  echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
