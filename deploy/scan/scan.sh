#!/usr/bin/env bash
# Run the three audit scanners an auditor would run against the site, then print one table:
# testssl.sh 3.2 (grade + score), sslyze (Mozilla "intermediate" compliance), Mozilla HTTP
# Observatory (grade + score). Exits 0 only when all three meet the bar (see summarize.py).
#
# Usage: deploy/scan/scan.sh [--out DIR] [TARGET]
#   no TARGET   the sandbox: domain, edge host and ACME root from its sandbox.json
#               ($SANDBOX_JSON, else .sandbox/sandbox.json, or .sandbox-$SANDBOX_ID/ when set);
#               results in the sandbox's state dir, scan/ (e.g. .sandbox/scan/summary.json)
#   TARGET      a public host name (example.com), scanned on port 443 as DNS resolves it, with
#               the public trust stores; results in .scan/TARGET/
#   --out DIR   write the results (raw scanner output + summary.json) there instead
#
# The scanners are installed (once, cached in /var/cache/flaskstack-scan) by install.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${SCAN_CACHE:-/var/cache/flaskstack-scan}"
python="${SCAN_PYTHON:-$repo/.venv/bin/python}"

usage() { sed -n '5,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit "${1:-0}"; }
log() { printf '==> %s\n' "$*"; }
die() { printf 'scan: %s\n' "$*" >&2; exit 2; }

out="" target=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -*) printf 'scan: unknown option %s\n' "$1" >&2; usage 2 ;;
    *) [[ -z "$target" ]] || usage 2; target="$1"; shift ;;
  esac
done

# ---- the target -------------------------------------------------------------------------------
ip="" ca_cert=""
if [[ -z "$target" ]]; then
  if [[ -n "${SANDBOX_JSON:-}" ]]; then
    sandbox_json="$SANDBOX_JSON"
  elif [[ "${SANDBOX_ID:-0}" == 0 ]]; then
    sandbox_json="$repo/.sandbox/sandbox.json"
  else
    sandbox_json="$repo/.sandbox-$SANDBOX_ID/sandbox.json"
  fi
  [[ -f "$sandbox_json" ]] ||
    die "no sandbox at $sandbox_json: run \`make demo\` first, or name a public TARGET"
  [[ -x "$python" ]] || die "no virtualenv at $python: run \`make venv\` first"
  # One line: domain, edge address (first host in group edge), CA file.
  read -r domain ip ca_cert < <("$python" - "$sandbox_json" <<'EOF'
import json, sys
spec = json.load(open(sys.argv[1]))
edge = next(h for h in spec["hosts"] if "edge" in h["groups"])
print(spec["domain"], edge["ip"], spec["ca_cert"])
EOF
  )
  [[ -r "$ca_cert" ]] || die "the sandbox's CA file $ca_cert is missing"
  out="${out:-$(dirname "$sandbox_json")/scan}"
else
  # Accept a URL too: keep only the host name.
  domain="${target#*://}"
  domain="${domain%%/*}"
  [[ "$domain" =~ ^[A-Za-z0-9.-]+$ ]] || die "TARGET must be a host name, got '$target'"
  [[ "$domain" != *:* ]] || die "only port 443 can be scanned (the Observatory has no port option)"
  out="${out:-$repo/.scan/$domain}"
  mkdir -p "$repo/.scan" && echo '*' >"$repo/.scan/.gitignore"  # results are not source
fi

"$here/install.sh"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out"/{testssl,sslyze,observatory}.* "$out/summary.json"

elapsed() { printf '%d s' "$((SECONDS - $1))"; }
if [[ -n "$ip" ]]; then
  log "scanning $domain at $ip (the sandbox's edge), trusting $ca_cert; results in $out"
else
  log "scanning $domain (public DNS and trust stores); results in $out"
fi

# ---- sslyze: Mozilla intermediate compliance ---------------------------------------------------
# Its exit status only says compliant or not; summarize.py reads the reasons from the console
# output and the certificate/connectivity facts from the JSON.
sslyze_args=(--mozilla_config=intermediate --json_out="$out/sslyze.json")
if [[ -n "$ip" ]]; then
  sslyze_args+=("$domain:443{$ip}" --certinfo_ca_file="$ca_cert")
else
  sslyze_args+=("$domain:443")
fi
log "[1/3] sslyze: Mozilla \"intermediate\" compliance"
started=$SECONDS
PYTHONWARNINGS=ignore "$python" -m sslyze "${sslyze_args[@]}" >"$out/sslyze.txt" 2>&1 || true
log "      done in $(elapsed "$started")"

# ---- Mozilla HTTP Observatory ------------------------------------------------------------------
# Run src/scan.js directly: the bin wrapper replaces NODE_EXTRA_CA_CERTS with a bundle that
# npm's skipped install script would have downloaded. For the sandbox, trust its CA and resolve
# its names to the edge host (resolve-to-edge.cjs); a public target uses node's own trust store.
observatory="$cache/observatory/node_modules/@mdn/mdn-http-observatory"
node_env=()
node_args=()
if [[ -n "$ip" ]]; then
  node_env+=(NODE_EXTRA_CA_CERTS="$ca_cert"
    SCAN_RESOLVE="{\"$domain\": \"$ip\", \"www.$domain\": \"$ip\"}")
  node_args+=(--require "$here/resolve-to-edge.cjs")
fi
log "[2/3] HTTP Observatory: security headers, redirects, cookies"
started=$SECONDS
node -p "JSON.stringify({version: require('$observatory/package.json').version})" \
  >"$out/observatory.version.json"
env "${node_env[@]}" node "${node_args[@]}" "$observatory/src/scan.js" "$domain" \
  >"$out/observatory.json" 2>"$out/observatory.log" || true
log "      done in $(elapsed "$started")"

# ---- testssl.sh: the full default scan with its rating -----------------------------------------
testssl_args=(--quiet --color 0 --warnings batch --overwrite
  --connect-timeout 10 --openssl-timeout 10
  --jsonfile-pretty "$out/testssl.json" --logfile "$out/testssl.log")
if [[ -n "$ip" ]]; then
  # The sandbox's names are in no DNS: ask none (no CAA/MX/rDNS lookups leave the machine).
  testssl_args+=(--ip "$ip" --nodns none --add-ca "$ca_cert")
fi
log "[3/3] testssl.sh: protocols, ciphers, certificates, vulnerabilities, rating (about 80 s)"
started=$SECONDS
TESTSSL_INSTALL_DIR="$cache/testssl/etc/testssl" \
  timeout 600 "$cache/testssl/usr/bin/testssl" "${testssl_args[@]}" "$domain" \
  >/dev/null 2>"$out/testssl.stderr" || true # its exit status is not the grade
log "      done in $(elapsed "$started")"

echo
summary_args=("$out" --domain "$domain")
[[ -n "$ip" ]] && summary_args+=(--ip "$ip" --ca-cert "$ca_cert")
exec "$python" "$here/summarize.py" "${summary_args[@]}"
