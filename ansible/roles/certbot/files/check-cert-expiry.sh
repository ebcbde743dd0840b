#!/bin/bash
# Report the certificates a TLS server actually serves and fail when one expires soon.
#
#   check-cert-expiry.sh [--connect HOST:PORT] [--min-days N] [--metrics FILE] [NAME...]
#
# For each NAME (sent as SNI) it asks for the ECDSA and the RSA certificate in turn (the
# client's signature algorithms pick one), prints one line per certificate, and exits 1 when
# any has fewer than N days left or cannot be fetched. --metrics also writes what it found for
# Prometheus (node_exporter's textfile format): each certificate's expiry time, or 0 when none
# was served, so the monitor host alerts on the RSA one too, which a browser-like probe never
# gets. Defaults come from
# /etc/default/flaskstack-cert-expiry (CERT_EXPIRY_CONNECT, CERT_EXPIRY_NAMES,
# CERT_EXPIRY_MIN_DAYS) when it exists. Checking what is served, not the files, also catches
# an nginx that was never reloaded after a renewal.
set -euo pipefail

readonly DEFAULTS=/etc/default/flaskstack-cert-expiry
connect="127.0.0.1:443"
min_days=14
metrics=""
names=()
if [[ -r "$DEFAULTS" ]]; then
  # shellcheck source=/dev/null
  source "$DEFAULTS"
  connect="${CERT_EXPIRY_CONNECT:-$connect}"
  min_days="${CERT_EXPIRY_MIN_DAYS:-$min_days}"
  read -r -a names <<<"${CERT_EXPIRY_NAMES:-}"
fi

while (($#)); do
  case "$1" in
    --connect) connect="$2"; shift 2 ;;
    --min-days) min_days="$2"; shift 2 ;;
    --metrics) metrics="$2"; shift 2 ;;
    -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) names=("$@"); break ;;
  esac
done
if ((${#names[@]} == 0)); then
  echo "no names to check: pass them or set CERT_EXPIRY_NAMES in $DEFAULTS" >&2
  exit 2
fi

# TLS 1.3 signature algorithms that only one key type can satisfy.
declare -A SIGALGS=(
  [ECDSA]="ecdsa_secp256r1_sha256:ecdsa_secp384r1_sha384"
  [RSA]="rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pkcs1_sha256"
)

now=$(date +%s)
failures=0
samples=()
printf '%-32s %-5s %-40s %-24s %s\n' NAME KEY SERIAL "NOT AFTER" "DAYS LEFT"
for name in "${names[@]}"; do
  for key in ECDSA RSA; do
    pem=$(openssl s_client -connect "$connect" -servername "$name" -sigalgs "${SIGALGS[$key]}" \
      </dev/null 2>/dev/null | openssl x509 2>/dev/null || true)
    if [[ -z "$pem" ]]; then
      printf '%-32s %-5s %s\n' "$name" "$key" "CRITICAL: no certificate served"
      samples+=("name=\"$name\",key=\"$key\"} 0")
      failures=$((failures + 1))
      continue
    fi
    serial=$(openssl x509 -noout -serial <<<"$pem" | cut -d= -f2)
    not_after=$(openssl x509 -noout -enddate <<<"$pem" | cut -d= -f2)
    expires=$(date -d "$not_after" +%s)
    days_left=$(((expires - now) / 86400))
    samples+=("name=\"$name\",key=\"$key\"} $expires")
    line=$(printf '%-32s %-5s %-40s %-24s %s' "$name" "$key" "$serial" "$not_after" "$days_left")
    if ((days_left < min_days)); then
      echo "$line CRITICAL: fewer than $min_days days left"
      failures=$((failures + 1))
    else
      echo "$line"
    fi
  done
done
if [[ -n "$metrics" ]]; then
  metric=flaskstack_tls_certificate_expiry_timestamp_seconds
  {
    echo "# HELP $metric When the certificate served for this name and key type expires (0: none served)."
    echo "# TYPE $metric gauge"
    for sample in "${samples[@]}"; do echo "$metric{$sample"; done
  } >"$metrics.tmp"
  mv -f "$metrics.tmp" "$metrics"
fi
if ((failures > 0)); then
  echo "$failures certificate(s) served by $connect missing or expiring within $min_days days" >&2
  exit 1
fi
