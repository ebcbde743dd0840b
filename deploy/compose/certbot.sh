#!/bin/bash
# The certificate manager of the Compose stack (the "certbot" service; Dockerfile target certbot).
#
# It keeps two lineages under the names nginx reads (nginx/templates/flaskstack-https.conf):
# /etc/letsencrypt/live/${TLS_CERT_NAME}-ecdsa/ (P-256) and …-rsa/ (RSA 2048), for SITE_HOST and
# SITE_ALIASES. nginx watches these files and reloads itself when they change
# (deploy/compose/nginx/40-flaskstack-certificates.sh), so nothing here needs nginx's container.
#
#   TLS_MODE=acme   (default) obtain by HTTP-01 webroot from ACME_SERVER (Let's Encrypt unless
#                   set), retrying with backoff until nginx serves the challenge, then
#                   `certbot renew` every RENEW_INTERVAL seconds (ARI decides when to renew)
#   TLS_MODE=local  no ACME: certificates from a local CA kept in the volume
#                   (/etc/letsencrypt/local-ca/root.pem, import it to trust https://localhost)
#
# The key types, certbot's options for each, the webroot and the default ACME server come from
# certificates.env beside this script (deploy/certbot/certificates.env, which Ansible reads too).
set -euo pipefail

: "${SITE_HOST:?SITE_HOST must name the site, e.g. example.org or localhost}"
: "${TLS_CERT_NAME:?TLS_CERT_NAME must name the certificate lineage}"
# shellcheck source=deploy/certbot/certificates.env
source "$(dirname "${BASH_SOURCE[0]}")/certificates.env"
readonly LIVE=/etc/letsencrypt/live
readonly WEBROOT="$ACME_WEBROOT"
readonly ACME_SERVER="${ACME_SERVER:-$DEFAULT_ACME_SERVER}"
readonly RENEW_INTERVAL="${RENEW_INTERVAL:-43200}"
read -r -a key_types <<<"$CERT_KEY_TYPES"
read -r -a aliases <<<"${SITE_ALIASES:-}"

log() { echo "certbot.sh: $*"; }

# certonly for one key type, unless its lineage exists (renewals are `certbot renew`'s job).
obtain() {
  local key_type=$1 lineage="$TLS_CERT_NAME-$1"
  [[ -s "$LIVE/$lineage/fullchain.pem" ]] && return 0
  local args=(
    certonly --non-interactive --agree-tos --webroot --webroot-path "$WEBROOT"
    --server "$ACME_SERVER" --cert-name "$lineage" --domain "$SITE_HOST"
  )
  local name
  for name in "${aliases[@]}"; do args+=(--domain "$name"); done
  if [[ -n "${ACME_EMAIL:-}" ]]; then
    args+=(--email "$ACME_EMAIL")
  else
    args+=(--register-unsafely-without-email)
  fi
  # certbot's options for this key type: CERT_KEY_ARGS_ECDSA, CERT_KEY_ARGS_RSA.
  local key_args_name="CERT_KEY_ARGS_${key_type^^}" key_args
  read -r -a key_args <<<"${!key_args_name}"
  args+=("${key_args[@]}")
  certbot "${args[@]}"
}

obtain_all() {
  local key_type
  for key_type in "${key_types[@]}"; do obtain "$key_type" || return 1; done
}

# The first certificates: nginx may still be starting, DNS may still be propagating. Retry
# with a doubling delay capped at an hour, which stays far below the CA's failure rate limits.
obtain_with_backoff() {
  local delay=10
  until obtain_all; do
    log "could not obtain the certificates yet; retrying in ${delay}s"
    sleep "$delay"
    delay=$((delay * 2 > 3600 ? 3600 : delay * 2))
  done
}

# PID 1 of the container: stop at once on `docker compose stop` instead of after the timeout.
trap 'exit 0' TERM INT

case "${TLS_MODE:-acme}" in
  acme)
    log "certificates for ${SITE_HOST} ${aliases[*]} from $ACME_SERVER"
    obtain_with_backoff
    log "certificates are in place; renewal check every ${RENEW_INTERVAL}s"
    while true; do
      sleep "$RENEW_INTERVAL" &
      wait $!
      certbot renew --non-interactive --no-random-sleep-on-renew || log "renewal failed; will retry"
    done
    ;;
  local)
    log "TLS_MODE=local: certificates from the local CA in /etc/letsencrypt/local-ca"
    while true; do
      python3 /opt/flaskstack/local_certificates.py
      sleep 86400 &
      wait $!
    done
    ;;
  *)
    log "TLS_MODE must be acme or local, got '${TLS_MODE}'"
    exit 2
    ;;
esac
