#!/bin/bash
# Compose only: runs once, when the postgres image initialises an empty data volume
# (/docker-entrypoint-initdb.d/). The app gets its own role that owns its database and nothing
# else: no superuser, no CREATEDB/CREATEROLE, as on the Ansible hosts. POSTGRES_PASSWORD stays
# the superuser's, for the operator (backups, psql). Changing APP_DB_PASSWORD later needs an
# ALTER ROLE: this script never runs again on an initialised volume.
set -euo pipefail

: "${APP_DB_PASSWORD:?APP_DB_PASSWORD must be set}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE flaskstack LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
CREATE DATABASE flaskstack OWNER flaskstack;
REVOKE ALL ON DATABASE flaskstack FROM PUBLIC;
SQL
