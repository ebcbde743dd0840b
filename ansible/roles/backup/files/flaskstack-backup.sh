#!/bin/bash
# Back up the app database: a pg_dump that restores, described by a manifest, with retention.
#
#   flaskstack-backup [--keep N]
#
# Writes BACKUP_DIR/<database>-<UTC time>.dump (pg_dump --format=custom) and beside it <…>.json:
# database, created_at, Postgres version, size, sha256, and the row count of every table of the
# public schema. The counts come from the very snapshot pg_dump saves: a REPEATABLE READ
# transaction exports it, counts in it, and stays open while pg_dump --snapshot reads it. Both
# files are written under temporary names and renamed when complete (dump first, then manifest):
# a .dump with its .json beside it is a whole backup. Then only the newest N backups are kept
# (--keep N, default BACKUP_KEEP). Settings: /etc/default/flaskstack-backup (role backup).
# Runs as postgres (root is switched to postgres). Any failure: one line on stderr, exit 1.
set -euo pipefail

readonly DEFAULTS=/etc/default/flaskstack-backup
# Defaults when the role has not written its settings.
BACKUP_DIR=/var/backups/flaskstack
BACKUP_KEEP=14
BACKUP_DATABASE=flaskstack
if [[ -r "$DEFAULTS" ]]; then
  # shellcheck source=/dev/null
  source "$DEFAULTS"
fi
export PGPORT="${PGPORT:-5432}"

die() {
  echo "flaskstack-backup: $*" >&2
  exit 1
}

# Peer authentication over the local socket: the postgres OS user needs no password.
if ((EUID == 0)); then
  exec runuser -u postgres -- "$0" "$@"
fi
[[ "$(id -un)" == postgres ]] || die "run as postgres or root, not $(id -un)"

keep="$BACKUP_KEEP"
while (($#)); do
  case "$1" in
    --keep)
      (($# >= 2)) || die "--keep needs a number"
      keep="$2"
      shift 2
      ;;
    -h | --help)
      sed -n '2,13s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *)
      echo "flaskstack-backup: unknown argument '$1' (usage: flaskstack-backup [--keep N])" >&2
      exit 2
      ;;
  esac
done
[[ "$keep" =~ ^[1-9][0-9]*$ ]] || die "the number of backups to keep must be 1 or more, not '$keep'"
[[ -d "$BACKUP_DIR" && -w "$BACKUP_DIR" ]] || die "$BACKUP_DIR is not a directory postgres can write"
cd "$BACKUP_DIR"

# One run at a time: the timer's and an operator's never interleave.
exec 9>.lock
flock --nonblock 9 || die "another backup is running (lock: $BACKUP_DIR/.lock)"

# What an interrupted run left (we hold the lock, so no run is writing them): never a backup.
find . -maxdepth 1 -name '.*.partial' -delete
for dump in "$BACKUP_DATABASE"-*.dump; do
  [[ -e "$dump" && ! -e "${dump%.dump}.json" ]] && rm -f -- "$dump"
done

# The name is the UTC time to the second; a second run within the same second waits for the next.
while :; do
  now=$(date +%s)
  name="$BACKUP_DATABASE-$(date -u -d "@$now" +%Y%m%dT%H%M%SZ)"
  [[ -e "$name.dump" || -e "$name.json" ]] || break
  sleep 0.2
done
created_at=$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ)
partial_dump=".$name.dump.partial"
partial_manifest=".$name.json.partial"
psql_errors=".$name.psql-errors.partial"
dump_errors=".$name.dump-errors.partial"

# Closing psql's input ends the transaction (a rollback, if it is still open); the temporary
# files go, the finished backup stays.
cleanup() {
  if [[ -n "${to_psql:-}" ]]; then exec {to_psql}>&-; fi
  wait "${psql_pid:-}" 2>/dev/null || :
  rm -f -- "$partial_dump" "$partial_manifest" "$psql_errors" "$dump_errors"
}
trap cleanup EXIT
# A write to a psql that has died fails with an error we report, instead of killing the script.
trap '' PIPE

psql_error() {
  local error
  error=$(grep -m1 -E 'ERROR|FATAL|error|could not' "$psql_errors" 2>/dev/null || :)
  echo "${error:-psql ended unexpectedly}"
}

coproc PSQL { exec psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$BACKUP_DATABASE" 2>"$psql_errors"; }
psql_pid=${PSQL_PID:?}
# Own copies of the pipes (bash closes PSQL[] as soon as psql exits), and only those: psql must
# see the end of its input when cleanup() closes to_psql.
exec {to_psql}>&"${PSQL[1]}" {from_psql}<&"${PSQL[0]}"
psql_in=${PSQL[1]} psql_out=${PSQL[0]}
exec {psql_in}>&- {psql_out}<&-

send() { printf '%s\n' "$@" 2>/dev/null 1>&"$to_psql" || die "$(psql_error)"; }
# The next line psql answers, into $answer.
receive() { IFS= read -r -t 3600 answer <&"$from_psql" || die "$(psql_error)"; }

send "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;" "SELECT pg_export_snapshot();"
receive
snapshot=$answer
[[ "$snapshot" =~ ^[0-9A-Fa-f-]+$ ]] || die "unexpected answer to pg_export_snapshot(): $snapshot"

# Every table's rows, counted in the snapshot: query_to_xml runs one count(*) per table from a
# single statement. flaskstack-restore counts the restored tables with the same query.
send "SELECT coalesce(json_object_agg(relname, row_count ORDER BY relname), '{}') AS tables
FROM (SELECT c.relname,
             (xpath('/row/n/text()',
                    query_to_xml(format('SELECT count(*) AS n FROM %I.%I', s.nspname, c.relname),
                                 false, true, '')))[1]::text::bigint AS row_count
      FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
      WHERE s.nspname = 'public' AND c.relkind IN ('r', 'p')) AS counted \gset" \
  "SELECT count(*) FROM json_object_keys(:'tables'::json);"
receive
table_count=$answer

started=$SECONDS
pg_dump --format=custom --snapshot="$snapshot" --file="$partial_dump" "$BACKUP_DATABASE" \
  2>"$dump_errors" || die "pg_dump failed: $(grep -m1 . "$dump_errors" || echo 'no message')"
dump_seconds=$((SECONDS - started))
size=$(stat -c %s "$partial_dump")
sha256=$(sha256sum "$partial_dump" | cut -d' ' -f1)
pg_dump_version=$(pg_dump --version)

# The manifest, written by psql (JSON quoting included) from the still-open snapshot transaction.
send "\\set name '$name'" "\\set created_at '$created_at'" "\\set size $size" \
  "\\set sha256 '$sha256'" "\\set dump_seconds $dump_seconds" \
  "\\set pg_dump_version '${pg_dump_version//\'/}'" \
  "SELECT jsonb_pretty(jsonb_build_object(
     'database', current_database(),
     'created_at', :'created_at',
     'postgres_version', current_setting('server_version'),
     'pg_dump_version', :'pg_dump_version',
     'dump', :'name' || '.dump',
     'format', 'pg_dump custom',
     'size', :size,
     'sha256', :'sha256',
     'dump_seconds', :dump_seconds,
     'tables', :'tables'::jsonb)) \\g '$partial_manifest'" \
  "COMMIT;" "SELECT 'committed';"
receive
[[ "$answer" == committed ]] || die "unexpected answer from psql: $answer"

mv -- "$partial_dump" "$name.dump"
mv -- "$partial_manifest" "$name.json"

# Retention: the newest $keep manifests name the backups kept (the names sort by time).
removed=0
mapfile -t manifests < <(find . -maxdepth 1 -name "$BACKUP_DATABASE-*.json" -printf '%f\n' | sort -r)
for manifest in "${manifests[@]:keep}"; do
  # The dump first: an interruption leaves a manifest, which the next run removes.
  rm -f -- "${manifest%.json}.dump" "$manifest"
  removed=$((removed + 1))
done

echo "flaskstack-backup: $BACKUP_DIR/$name.dump: $size bytes, $table_count tables," \
  "dumped in $dump_seconds s; $((${#manifests[@]} - removed)) backups kept, $removed removed"
