# The front door. `make` (or `make help`) lists every target.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Debian's python3: the interpreter the hosts run, and the faster one on this machine.
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help
help: ## List the targets (this text)
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## ---- set-up ---------------------------------------------------------------

$(BIN)/.installed: requirements-pip.txt requirements.txt requirements-dev.txt deploy/venv.sh \
		ansible/requirements.yml
	@echo "==> virtualenv $(VENV) from the hash-pinned lock file, by the pinned pip"
	@PYTHON=$(PYTHON) deploy/venv.sh $(VENV) requirements-dev.txt
	@echo "==> Ansible collections as pinned by ansible/requirements.yml"
	@$(BIN)/ansible-galaxy collection install --offline -r ansible/requirements.yml \
	  -p "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" 2>&1 \
	  | { grep -v -e 'part of the pip Ansible package' -e '^Starting galaxy' || true; }
	@touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create the virtualenv (.venv) from requirements-dev.txt

# Every lock file beside its input (.in → .txt), compiled by the one lock tool, uv (pinned in
# requirements-dev.txt); requirements.txt before requirements-dev.txt, which it constrains.
LOCKS := requirements-pip requirements requirements-dev deploy/certbot/requirements tests/compose/tools \
  tools/sandbox/s3-server \
  examples/guestbook/requirements

.PHONY: lock
lock: venv ## Re-resolve every lock file with uv: keeps the pins that still fit (UPGRADE=1: newest)
	@for lock in $(LOCKS); do \
	  echo "==> $$lock.txt"; \
	  uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	    --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade) $$lock.in -o $$lock.txt; \
	done

# The monitoring tools the hosts run (Debian trixie's), unpacked for the linters and tests here.
MONITORING_TOOLS_DIR := /var/cache/flaskstack-tools/monitoring
MONITORING_TOOLS := $(MONITORING_TOOLS_DIR)/usr/bin

.PHONY: deps
deps: ## Install the Debian packages the tests need (only the missing ones), and trixie's promtool, amtool, mtail
	@tools/apt-install.sh tests/debian-packages.txt tools/debian-packages.txt
	@tools/fetch-debian.sh trixie $(MONITORING_TOOLS_DIR) promtool prometheus-alertmanager mtail

## ---- develop ----------------------------------------------------------------

.PHONY: dev
dev: deps venv ## Run the app and the worker locally against throwaway Postgres and Redis
	@$(BIN)/python -m tools.devserver

.PHONY: lint
lint: deps venv ## Run the linters (ruff, shellcheck, yamllint, ansible-lint, squawk; promtool on the alert rules)
	@echo "==> ruff"; ruff check . && ruff format --check .
	@echo "==> shellcheck"; git ls-files -z '*.sh' '.ci/run' | xargs -0 shellcheck -x
	@echo "==> yamllint"; yamllint -s .
	@echo "==> ansible-lint"; cd ansible && ansible-lint -q
	@echo "==> squawk (every migration, as SQL)"; python -m tools.lint_migrations
	@echo "==> promtool (the alert rules, and their unit tests)"
	@$(MONITORING_TOOLS)/promtool check rules --lint-fatal ansible/roles/monitoring/files/rules/*.yml
	@$(MONITORING_TOOLS)/promtool test rules tests/monitoring/*.test.yml

.PHONY: test
test: deps venv lint test-app test-bench-smoke test-e2e test-e2e-ha test-compose ## Run everything: linters, app tests, sandbox and Compose end to end

.PHONY: test-app
test-app: deps venv ## App tests against real Postgres, Redis and an SMTP sink; the example app's
	@echo "==> app tests (unit + integration; examples/guestbook)"
	@pytest tests/unit tests/integration examples/guestbook/tests

.PHONY: test-e2e
test-e2e: deps venv ## Deploy to a fresh single-host sandbox, check it from outside, tear it down
	@tools/run-e2e.sh single

.PHONY: test-e2e-multi
test-e2e-multi: deps venv ## 1 edge + 2 app + 1 db/cache: the S3 repository, a replaced db host, a second app (not in make test)
	@tools/run-e2e.sh multi

.PHONY: test-e2e-ha
test-e2e-ha: deps venv ## The high-availability topology (Patroni, Sentinel, two edges) and its fault suite
	@tools/run-e2e.sh ha

.PHONY: test-bench-smoke
test-bench-smoke: deps venv ## A short run of make bench, so the benchmark never rots (no timing gate)
	@echo "==> make bench, smoke mode"
	@pytest -p no:cacheprovider tests/bench

.PHONY: test-compose
test-compose: deps venv ## Build and run the Compose stack on a private Docker engine with Pebble, check it, remove it
	@tests/compose/run.sh

## ---- the sandbox and deployments ---------------------------------------------

TOPOLOGY ?= single
SANDBOX_ID ?= 0
export SANDBOX_ID
SANDBOX_JSON := $(if $(filter 0,$(SANDBOX_ID)),.sandbox,.sandbox-$(SANDBOX_ID))/sandbox.json
# The inventory the sandbox wrote for itself (ansible/inventories/sandbox for SANDBOX_ID=0).
SANDBOX_INVENTORY = $(shell python3 -c 'import json; print(json.load(open("$(SANDBOX_JSON)"))["inventory"])' 2>/dev/null || echo ansible/inventories/sandbox)

.PHONY: demo
demo: venv ## Start the sandbox (TOPOLOGY=single|multi|ha) and deploy the stack to it (APP=another app)
	@tools/sandbox/sandbox.sh up $(TOPOLOGY)
	@# Read after the sandbox is up: make expands a recipe before it runs the first line.
	@INVENTORY="$$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["inventory"])' \
	  "$(SANDBOX_JSON)")" deploy/deploy.sh
	@tools/sandbox/sandbox.sh summary

.PHONY: demo-down
demo-down: ## Remove the sandbox: hosts, network, CA, state
	@tools/sandbox/sandbox.sh down

.PHONY: deploy
deploy: venv ## Provision and deploy with Ansible: make deploy INVENTORY=… [APP=dir or git URL@ref]
	@INVENTORY="$(INVENTORY)" deploy/deploy.sh

# The app's plays only (site.yml's `app` tag): skips converging the hosts, for a release shipped
# to hosts a full deploy already provisioned. Settings of other roles need `make deploy`.
.PHONY: deploy-app
deploy-app: venv ## Ship a new release only (its .env, migrations, rolling switch): make deploy-app INVENTORY=… [APP=…]
	@INVENTORY="$(INVENTORY)" deploy/deploy.sh --tags app

.PHONY: rollback
rollback: venv ## Switch the app hosts back to the previous release (or RELEASE=<id>), no downtime
	@INVENTORY="$(INVENTORY)" PLAYBOOK=ansible/rollback.yml ROLLBACK_RELEASE="$(RELEASE)" \
	  deploy/deploy.sh $(if $(RELEASE),-e rollback_release=$(RELEASE))

# Only the stdout callback: ansible.cfg's task-timing table says nothing when no task reaches a host.
.PHONY: settings
settings: venv ## Each host's settings as a deploy resolves and checks them, without connecting (INVENTORY=…)
	@ANSIBLE_CONFIG=ansible/ansible.cfg ANSIBLE_CALLBACKS_ENABLED=ansible.builtin.default \
	  ansible-playbook -i "$(or $(INVENTORY),$(SANDBOX_INVENTORY))" ansible/settings.yml

.PHONY: releases
releases: venv ## The releases on each app host and the last deploys (INVENTORY=…, default: the sandbox)
	@ANSIBLE_CONFIG=ansible/ansible.cfg ansible app -i "$(or $(INVENTORY),$(SANDBOX_INVENTORY))" \
	  --become -m ansible.builtin.command -a /usr/local/bin/flaskstack-releases

.PHONY: unlock
unlock: venv ## Remove the deploy lock a dead deploy left on the hosts: make unlock INVENTORY=… FORCE=1
	@test "$(FORCE)" = 1 || { echo "unlock: removes another run's lock; say FORCE=1" >&2; exit 2; }
	@ANSIBLE_CONFIG=ansible/ansible.cfg ansible-playbook -i "$(INVENTORY)" ansible/unlock.yml \
	  -e deploy_lock_force=true

.PHONY: certs
certs: venv ## Expiry of the certificates the edge serves (INVENTORY=…, default: the sandbox)
	@ANSIBLE_CONFIG=ansible/ansible.cfg ansible edge -i "$(or $(INVENTORY),$(SANDBOX_INVENTORY))" \
	  --become -m ansible.builtin.command -a /usr/local/sbin/flaskstack-cert-expiry

.PHONY: backup
backup: venv ## Back up the database now and copy it to backups/<inventory>/: make backup INVENTORY=…
	@INVENTORY="$(INVENTORY)" deploy/backup.sh

.PHONY: switchover
switchover: venv ## Move a Patroni cluster's primary to another member: make switchover INVENTORY=… [CANDIDATE=host]
	@INVENTORY="$(INVENTORY)" deploy/switchover.sh $(if $(CANDIDATE),-e switchover_candidate=$(CANDIDATE))

.PHONY: drain
drain: venv ## Take an app or edge host out of rotation, no request lost: make drain INVENTORY=… HOST=host
	@INVENTORY="$(INVENTORY)" deploy/drain.sh drained "$(HOST)"

.PHONY: undrain
undrain: venv ## Put a drained host back in rotation: make undrain INVENTORY=… HOST=host
	@INVENTORY="$(INVENTORY)" deploy/drain.sh in_rotation "$(HOST)"

.PHONY: backups
backups: venv ## List the off-host pgBackRest repository (backups, newest WAL, recovery window): make backups INVENTORY=…
	@INVENTORY="$(INVENTORY)" deploy/backups.sh

.PHONY: restore
restore: venv ## Restore to TIME='…+00' (or the newest write; BACKUP=…dump: a dump) INTO=scratch|live: make restore INVENTORY=…
	@INVENTORY="$(INVENTORY)" TIME="$(TIME)" BACKUP="$(BACKUP)" INTO="$(INTO)" KEEP="$(KEEP)" \
	  CONFIRM="$(CONFIRM)" deploy/restore.sh

.PHONY: monitor
monitor: venv ## The dashboard and alerts through an SSH tunnel to the monitor host: make monitor INVENTORY=… [PORT=9090]
	@INVENTORY="$(or $(INVENTORY),$(SANDBOX_INVENTORY))" deploy/monitor.sh $(PORT)

.PHONY: status
status: venv ## The stack on one screen: hosts, firing alerts, traffic, p99, certificates, backups (INVENTORY=…)
	@INVENTORY="$(or $(INVENTORY),$(SANDBOX_INVENTORY))" deploy/monitor.sh --status

.PHONY: audit
audit: venv ## Host audits: Lynis, ssh-audit and systemd-analyze security on every host, one table (INVENTORY=… [LIMIT=hosts])
	@INVENTORY="$(or $(INVENTORY),$(SANDBOX_INVENTORY))" LIMIT="$(LIMIT)" deploy/audit.sh

.PHONY: bench
bench: venv ## Measure the stack against its own ceilings and Caddy (~27 min); table + .build/bench/results.json
	@tools/bench/bench.sh

.PHONY: scan
scan: venv ## Audit scans (testssl.sh, sslyze, HTTP Observatory) of the sandbox, or TARGET=host
	@tools/scan/scan.sh $(TARGET)

## ---- Docker Compose ------------------------------------------------------------

.PHONY: up
up: ## Build and start the Compose stack from .env; returns once HTTPS answers
	@[ -f .env ] || { echo "no .env: cp .env-template .env and fill in its Docker Compose section" >&2; exit 1; }
	@docker compose up --detach --build --wait

.PHONY: compose-app
compose-app: venv ## Another app for Compose: its release at .build/compose/app (APP=dir or git URL@ref; then APP_DIR in .env)
	@deploy/compose-app.sh

.PHONY: down
down: ## Stop the Compose stack (data volumes stay; docker compose down -v deletes them)
	@docker compose down

# With an inventory: every host's journal, merged, from the monitor host; without: Compose's.
.PHONY: logs
logs: ## Every host's journal from the monitor host: make logs INVENTORY=… [UNIT=…] [SINCE=-1h]; no INVENTORY: follow Compose's
	@if [[ -n "$(INVENTORY)" ]]; then \
	  INVENTORY="$(INVENTORY)" deploy/monitor.sh --logs "$(UNIT)" "$(SINCE)"; \
	else docker compose logs --follow --tail=100; fi
