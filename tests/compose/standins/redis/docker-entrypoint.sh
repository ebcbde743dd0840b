#!/bin/bash
# Like the official redis image's entrypoint: options alone mean redis-server, and a root start
# hands /data to the redis user and drops privileges.
set -euo pipefail

if [[ "${1:-}" == -* || "${1:-}" == *.conf ]]; then
  set -- redis-server "$@"
fi
if [[ "${1:-}" == redis-server && "$(id -u)" == 0 ]]; then
  find /data \! -user redis -exec chown redis:redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
exec "$@"
