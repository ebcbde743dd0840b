#!/bin/sh
# Compose only: the certificate side of the official nginx image's start-up, mounted as
# /docker-entrypoint.d/40-flaskstack-certificates.sh (runs after the image has rendered
# /etc/nginx/templates/*.template and sourced 15-flaskstack-features.envsh).
#
# nginx/README.md, "The first certificate": nginx starts with the port-80 configuration alone,
# which serves the ACME challenge; the 443 servers (flaskstack-https.conf.template) are added
# once both certificates exist. Then every CERT_WATCH_INTERVAL seconds (default 30) a watcher
# compares the certificate files with what nginx last loaded and, when certbot (or
# TLS_MODE=local) has renewed them, validates the configuration and reloads nginx: new workers
# read the new files while the old ones finish their requests, no restart and no dropped
# connection. The certbot container needs no access to this one or to the Docker socket.
#
# POSIX sh: it runs under the image's /bin/sh.
set -eu

LIVE=/etc/letsencrypt/live
HTTPS_TEMPLATE=/etc/nginx/flaskstack/templates-https/flaskstack-https.conf.template
HTTPS_CONF=/etc/nginx/conf.d/flaskstack-https.conf
INTERVAL="${CERT_WATCH_INTERVAL:-30}"

# The image's own site claims port 80 as default server; flaskstack.conf has that role.
rm -f /etc/nginx/conf.d/default.conf

log() { echo "$0: $*"; }

certificates() {
    printf '%s\n' "$LIVE/$TLS_CERT_NAME-ecdsa" "$LIVE/$TLS_CERT_NAME-rsa"
}

have_certificates() {
    for lineage in $(certificates); do
        [ -s "$lineage/fullchain.pem" ] && [ -s "$lineage/privkey.pem" ] || return 1
    done
}

# What nginx has to reload for: the bytes of both lineages' current files.
fingerprint() {
    for lineage in $(certificates); do
        cat "$lineage/fullchain.pem" "$lineage/privkey.pem"
    done 2>/dev/null | cksum
}

# Render like the image's 20-envsubst-on-templates.sh: only variables that are set are
# replaced, so nginx's own $variables stay as they are.
render_https() {
    defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
    envsubst "$defined" <"$HTTPS_TEMPLATE" >"$HTTPS_CONF.tmp"
    mv "$HTTPS_CONF.tmp" "$HTTPS_CONF"
}

reload() {
    if nginx -t -q; then
        nginx -s reload
        log "$1; nginx reloaded"
        return 0
    fi
    log "$1, but the configuration does not validate: still serving the previous one"
    return 1
}

watch() {
    loaded=$(fingerprint)
    while sleep "$INTERVAL"; do
        if [ ! -e "$HTTPS_CONF" ]; then
            have_certificates || continue
            render_https
            if reload "the certificates exist: HTTPS enabled"; then
                loaded=$(fingerprint)
            else
                rm -f "$HTTPS_CONF"
            fi
        elif [ "$(fingerprint)" != "$loaded" ]; then
            current=$(fingerprint)
            reload "the certificates changed" && loaded=$current
        fi
    done
}

: "${TLS_CERT_NAME:?TLS_CERT_NAME must name the certificate lineage}"
if have_certificates; then
    render_https
    log "certificates found: starting with HTTPS"
else
    rm -f "$HTTPS_CONF"
    log "no certificates yet: serving the ACME challenge on port 80 until they exist"
fi
# Outlives this script: the entrypoint goes on to exec nginx, which becomes its parent.
watch </dev/null &
