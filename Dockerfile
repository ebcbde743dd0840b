# flaskstack: the app image (default target), the certbot image (target "certbot"), the
# scheduler image (target "scheduler": the app image with systemd's calendar parser) and the
# Postgres image (target "postgres": the official one with pgBackRest, for WAL archiving and
# backups).
#
#   docker compose build            # what docker-compose.yml does
#   docker build -t flaskstack-app .
#
# Stages: python-base (settings every stage shares) → builder (virtualenvs from the hash-pinned
# lock files; the only stage that may ever need compilers) → source (the app's files) →
# certbot, app, scheduler (slim runtimes that copy a finished virtualenv and run as non-root
# users).

ARG PYTHON_IMAGE=python:3.13-slim-trixie
ARG POSTGRES_IMAGE=postgres:17
# The app in the image: a directory of the build context with its flaskstack.toml at the top
# (docs/app-contract.md). Default: this repository's blog; `make compose-app APP=…` puts another
# app's release at .build/compose/app.
ARG APP_DIR=.

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ---------------------------------------------------------------------------------------------
FROM python-base AS builder
# Every package in the locks ships wheels for this Python; should one ever need compiling, its
# build dependencies (apt-get install build-essential libpq-dev …) belong here and nowhere else.
# pip lives in a venv of its own and installs into the runtime venvs (`pip --python`), so the
# runtime images carry no installer. It is the hash-pinned pip of requirements-pip.txt, as on the
# hosts and in `make venv`, not the base image's: a lock is reproducible only with its installer.
COPY requirements-pip.txt /tmp/requirements/pip.txt
RUN python -m venv /opt/pip \
    && /opt/pip/bin/pip install --no-deps --require-hashes -r /tmp/requirements/pip.txt
ARG APP_DIR
COPY ${APP_DIR}/requirements.txt /tmp/requirements/app.txt
RUN python -m venv --without-pip /opt/venv \
    && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-deps --require-hashes \
        -r /tmp/requirements/app.txt
COPY deploy/certbot/requirements.txt /tmp/requirements/certbot.txt
RUN python -m venv --without-pip /opt/certbot \
    && /opt/pip/bin/pip --python /opt/certbot/bin/python install --no-deps --require-hashes \
        -r /tmp/requirements/certbot.txt

# ---------------------------------------------------------------------------------------------
# What the image holds of the app: the paths its manifest lists, the manifest and the lock, as
# in a release (deploy/build-release.sh), and nothing else of the build context.
FROM python-base AS source
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG APP_DIR
COPY deploy/manifest.py /opt/flaskstack/manifest.py
COPY ${APP_DIR}/ /src/
WORKDIR /src
RUN mkdir /app \
    && { python /opt/flaskstack/manifest.py get files; printf '%s\n' flaskstack.toml requirements.txt; } \
        | tr '\n' '\0' | xargs -0 cp -a --parents -t /app

# ---------------------------------------------------------------------------------------------
# certbot 5.8 from the same lock as the Ansible hosts (ARI renewal), run by
# deploy/compose/certbot.sh: obtains the certificates by webroot, then renews them in a loop.
FROM python-base AS certbot
RUN groupadd --gid 10002 certbot \
    && useradd --uid 10002 --gid certbot --home-dir /var/lib/letsencrypt \
        --no-create-home --shell /usr/sbin/nologin certbot \
    && install -d -o certbot -g certbot -m 0755 \
        /etc/letsencrypt /var/lib/letsencrypt /var/log/letsencrypt /var/www/acme
COPY --from=builder /opt/certbot /opt/certbot
COPY deploy/compose/certbot.sh deploy/compose/local_certificates.py deploy/certbot/certificates.env \
    /opt/flaskstack/
ENV PATH=/opt/certbot/bin:$PATH
# Numeric, so a runtime can check "not root" without reading the image's /etc/passwd.
USER 10002:10002
# The volumes mounted here take this ownership when they are first created.
VOLUME ["/etc/letsencrypt", "/var/www/acme"]
ENTRYPOINT ["/opt/flaskstack/certbot.sh"]

# ---------------------------------------------------------------------------------------------
# The app's user, shared by the app and scheduler images.
FROM python-base AS runtime
RUN groupadd --gid 10001 flaskstack \
    && useradd --uid 10001 --gid flaskstack --home-dir /srv/flaskstack \
        --no-create-home --shell /usr/sbin/nologin flaskstack

# ---------------------------------------------------------------------------------------------
FROM runtime AS app
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    GUNICORN_BIND=0.0.0.0:8000
WORKDIR /srv/flaskstack
# The same layout as a release directory on the Ansible hosts, owned by root: the app's user
# can read its code but not change it.
COPY --from=source /app/ ./
COPY deploy/gunicorn.conf.py deploy/manifest.py deploy/docker-entrypoint.sh \
    deploy/wait-for-services.py deploy/scheduler.py deploy/metrics.py deploy/
# The app's build (the blog fingerprints and precompresses its static files), and bytecode: the
# code is read-only at run time, so nothing is compiled on the first request. /srv/static is
# where `docker-entrypoint.sh release` publishes the static files for nginx (a named volume in
# Compose).
RUN python deploy/manifest.py run build \
    && static="$(python deploy/manifest.py get static)" \
    && if [ -n "$static" ]; then ln -s "../$static" deploy/static; else mkdir deploy/static; fi \
    && python -m compileall -q . \
    && install -d -o flaskstack -g flaskstack -m 0755 /srv/static
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["deploy/docker-entrypoint.sh"]
CMD ["web"]

# ---------------------------------------------------------------------------------------------
# The app's [[scheduled]] jobs (deploy/scheduler.py, Compose's scheduler service). systemd is
# here for `systemd-analyze calendar` only, so that a job's on_calendar means what it means to
# the hosts' systemd timers; it never runs as an init.
FROM runtime AS scheduler
# Before the app's files, so a new release reuses this layer. The suite's current package
# (security updates included): a pinned Debian version would stop installing at the suite's
# next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends systemd \
    && rm -rf /var/lib/apt/lists/*
COPY --from=app /opt/venv /opt/venv
COPY --from=app /srv/flaskstack /srv/flaskstack
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv/flaskstack
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=1 \
    CMD ["deploy/docker-entrypoint.sh", "scheduler-check"]
ENTRYPOINT ["deploy/docker-entrypoint.sh"]
CMD ["scheduler"]

# ---------------------------------------------------------------------------------------------
# Postgres with pgBackRest (the base image's distribution's package): the postgres service
# archives its WAL with it, the pgbackrest service takes the base backups and restores
# (deploy/compose/pgbackrest.py, which needs python3). The directories are the postgres user's
# (the repository's named volume takes this ownership when it is first created).
FROM ${POSTGRES_IMAGE} AS postgres
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pgbackrest python3 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0750 /var/lib/pgbackrest /var/spool/pgbackrest
COPY --chmod=0755 deploy/compose/pgbackrest.py /usr/local/bin/flaskstack-pgbackrest

# The default target (`docker build .`): the app image.
FROM app
