#!/bin/sh
# The official nginx image's entrypoint contract: before nginx starts, /docker-entrypoint.d/
# files run in version order, *.envsh sourced (their exports reach nginx and later scripts),
# *.sh executed; both only when executable.
set -e

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
    for f in $(find /docker-entrypoint.d/ -follow -type f -print | sort -V); do
        case "$f" in
            *.envsh)
                if [ -x "$f" ]; then
                    echo "$0: sourcing $f"
                    # shellcheck source=/dev/null
                    . "$f"
                fi
                ;;
            *.sh)
                if [ -x "$f" ]; then
                    echo "$0: launching $f"
                    "$f"
                fi
                ;;
        esac
    done
fi
exec "$@"
