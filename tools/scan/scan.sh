#!/usr/bin/env bash
# Run the three audit scanners an auditor would run against the site, then print one table:
# testssl.sh 3.2 (grade + score), sslyze (Mozilla "intermediate" compliance), Mozilla HTTP
# Observatory (grade + score). Exits 0 only when all three meet the bar (see summarize.py),
# 1 when one misses it, 2 on a usage error.
#
# Usage: tools/scan/scan.sh [--out DIR] [--ip IP] [--ca-cert FILE] [TARGET]
#   no TARGET      the sandbox: domain, edge host and ACME root from its sandbox.json
#                  ($SANDBOX_JSON, else .sandbox/sandbox.json, or .sandbox-$SANDBOX_ID/ when set);
#                  results in the sandbox's state dir, scan/ (e.g. .sandbox/scan/summary.json)
#   TARGET         a host name (example.com), scanned on port 443 as DNS resolves it, with the
#                  public trust stores; results in .scan/TARGET/
#   --ip IP        scan this address for TARGET instead of asking DNS (e.g. a new server before
#                  the DNS switch); the name is then looked up nowhere
#   --ca-cert FILE trust this CA for TARGET instead of the public ones (a staging or test CA)
#   --out DIR      write the results (raw scanner output + summary.json) there instead
#
# The scanners are installed once, cached in /var/cache/flaskstack-scan, by install.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${SCAN_CACHE:-/var/cache/flaskstack-scan}"
python="${SCAN_PYTHON:-$repo/.venv/bin/python}"

usage() { sed -n '7,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit "${1:-0}"; }
log() { printf '==> %s\n' "$*"; }
die() { printf 'scan: %s\n' "$*" >&2; exit 2; }

out="" target="" ip="" ca_cert=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage ;;
    --out | --ip | --ca-cert)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in --out) out="$2" ;; --ip) ip="$2" ;; --ca-cert) ca_cert="$2" ;; esac
      shift 2
      ;;
    -*) printf 'scan: unknown option %s\n\n' "$1" >&2; usage 2 >&2 ;;
    *) [[ -z "$target" ]] || die "one TARGET at most"; target="$1"; shift ;;
  esac
done

# ---- the target -------------------------------------------------------------------------------
[[ -x "$python" ]] || die "no virtualenv at $python: run \`make venv\` first"
if [[ -z "$target" ]]; then
  [[ -z "$ip$ca_cert" ]] || die "--ip and --ca-cert need a TARGET (the sandbox brings its own)"
  if [[ -n "${SANDBOX_JSON:-}" ]]; then
    sandbox_json="$SANDBOX_JSON"
  elif [[ "${SANDBOX_ID:-0}" == 0 ]]; then
    sandbox_json="$repo/.sandbox/sandbox.json"
  else
    sandbox_json="$repo/.sandbox-$SANDBOX_ID/sandbox.json"
  fi
  [[ -f "$sandbox_json" ]] ||
    die "no sandbox at $sandbox_json: run \`make demo\` first, or name a TARGET"
  # Domain, edge address (the first host in group edge) and the ACME root, on one line.
  read -r domain ip ca_cert < <("$python" -c '
import json, sys
spec = json.load(open(sys.argv[1]))
edge = next(host for host in spec["hosts"] if "edge" in host["groups"])
print(spec["domain"], edge["ip"], spec["ca_cert"])' "$sandbox_json")
  out="${out:-$(dirname "$sandbox_json")/scan}"
else
  domain="${target#*://}" # a URL is fine too: keep its host name
  domain="${domain%%/*}"
  [[ "$domain" != *:* ]] || die "only port 443 can be scanned (the Observatory has no port option)"
  [[ "$domain" =~ ^[A-Za-z0-9.-]+$ ]] || die "TARGET must be a host name, got '$target'"
  if [[ -z "$out" ]]; then
    out="$repo/.scan/$domain"
    mkdir -p "$repo/.scan" && echo '*' >"$repo/.scan/.gitignore" # results, not source
  fi
fi
if [[ -n "$ca_cert" ]]; then
  [[ -r "$ca_cert" ]] || die "cannot read the CA file $ca_cert"
  ca_cert="$(realpath "$ca_cert")"
fi

"$here/install.sh"

mkdir -p "$out"
out="$(realpath "$out")"
rm -f "$out"/{testssl,sslyze,observatory}.* "$out/summary.json"

elapsed() { printf '%d s' "$((SECONDS - $1))"; }
log "scanning $domain${ip:+ at $ip}${ca_cert:+, trusting $ca_cert}; results in $out"

# ---- sslyze: Mozilla intermediate compliance ---------------------------------------------------
# Its exit status only says compliant or not; summarize.py reads the reasons from the console
# output and the connectivity facts from the JSON.
sslyze_args=(--mozilla_config=intermediate --json_out="$out/sslyze.json")
if [[ -n "$ip" ]]; then
  sslyze_args+=("$domain:443{$ip}") # sslyze's form for "this name at that address"
else
  sslyze_args+=("$domain:443")
fi
[[ -z "$ca_cert" ]] || sslyze_args+=(--certinfo_ca_file="$ca_cert")
log "[1/3] sslyze: Mozilla \"intermediate\" compliance"
started=$SECONDS
# PYTHONWARNINGS: its bundled trust stores trigger a cryptography deprecation warning per run.
PYTHONWARNINGS=ignore "$python" -m sslyze "${sslyze_args[@]}" >"$out/sslyze.txt" 2>&1 || true
log "      done in $(elapsed "$started")"

# ---- Mozilla HTTP Observatory ------------------------------------------------------------------
# src/scan.js, not the bin wrapper: the wrapper points NODE_EXTRA_CA_CERTS at a bundle that npm's
# skipped install script would have downloaded. With --ca-cert node trusts that CA too; with --ip
# the site's names resolve to that address (resolve-to-edge.cjs), else DNS answers.
observatory="$cache/observatory/node_modules/@mdn/mdn-http-observatory"
node_env=()
node_args=()
[[ -z "$ca_cert" ]] || node_env+=(NODE_EXTRA_CA_CERTS="$ca_cert")
if [[ -n "$ip" ]]; then
  node_env+=(SCAN_RESOLVE="{\"$domain\": \"$ip\", \"www.$domain\": \"$ip\"}")
  node_args+=(--require "$here/resolve-to-edge.cjs")
fi
log "[2/3] HTTP Observatory: security headers, redirects, cookies"
started=$SECONDS
node -p "JSON.stringify({version: require(process.argv[1]).version})" \
  "$observatory/package.json" >"$out/observatory.version.json"
env "${node_env[@]}" node "${node_args[@]}" "$observatory/src/scan.js" "$domain" \
  >"$out/observatory.json" 2>"$out/observatory.log" || true
log "      done in $(elapsed "$started")"

# ---- testssl.sh: the full default scan with its rating -----------------------------------------
testssl_args=(--quiet --color 0 --warnings batch --overwrite
  --connect-timeout 10 --openssl-timeout 10
  --jsonfile-pretty "$out/testssl.json" --logfile "$out/testssl.log")
# With an address given the name may be in no DNS (the sandbox's is not): ask DNS nothing.
[[ -z "$ip" ]] || testssl_args+=(--ip "$ip" --nodns none)
[[ -z "$ca_cert" ]] || testssl_args+=(--add-ca "$ca_cert")
log "[3/3] testssl.sh: protocols, ciphers, certificates, vulnerabilities, rating (about 80 s)"
started=$SECONDS
# Run from outside any git checkout: testssl.sh appends the checkout's commit to its version.
(cd "$cache/testssl" && TESTSSL_INSTALL_DIR="$cache/testssl/etc/testssl" \
  timeout 600 usr/bin/testssl "${testssl_args[@]}" "$domain" >/dev/null 2>"$out/testssl.stderr") ||
  true # its exit status is not the grade
log "      done in $(elapsed "$started")"

echo
summary_args=("$out" --domain "$domain")
[[ -z "$ip" ]] || summary_args+=(--ip "$ip")
[[ -z "$ca_cert" ]] || summary_args+=(--ca-cert "$ca_cert")
exec "$python" "$here/summarize.py" "${summary_args[@]}"
