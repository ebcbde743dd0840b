# flaskstack: the app image (default target) and the certbot image (target "certbot").
#
#   docker compose build            # what docker-compose.yml does
#   docker build -t flaskstack-app .
#
# Stages: python-base (settings every stage shares) → builder (virtualenvs from the hash-pinned
# lock files; the only stage that may ever need compilers) → certbot, app (slim runtimes that
# copy a finished virtualenv and run as non-root users).

ARG PYTHON_IMAGE=python:3.13-slim-trixie

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
COPY requirements.txt /tmp/requirements/app.txt
RUN python -m venv --without-pip /opt/venv \
    && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-deps --require-hashes \
        -r /tmp/requirements/app.txt
COPY deploy/certbot/requirements.txt /tmp/requirements/certbot.txt
RUN python -m venv --without-pip /opt/certbot \
    && /opt/pip/bin/pip --python /opt/certbot/bin/python install --no-deps --require-hashes \
        -r /tmp/requirements/certbot.txt

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
FROM python-base AS app
RUN groupadd --gid 10001 flaskstack \
    && useradd --uid 10001 --gid flaskstack --home-dir /srv/flaskstack \
        --no-create-home --shell /usr/sbin/nologin flaskstack
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    GUNICORN_BIND=0.0.0.0:8000
WORKDIR /srv/flaskstack
# The same layout as a release directory on the Ansible hosts, owned by root: the app's user
# can read its code but not change it.
COPY flaskstack.toml ./
COPY app/ app/
COPY migrations/ migrations/
COPY deploy/gunicorn.conf.py deploy/manifest.py deploy/docker-entrypoint.sh deploy/
# Fingerprinted, precompressed (.gz, .br) static files, and bytecode: the code is read-only
# at run time, so nothing is compiled on the first request. /srv/static is where
# `docker-entrypoint.sh release` publishes them for nginx (a named volume in Compose).
RUN python deploy/manifest.py run build \
    && ln -s "../$(python deploy/manifest.py get static)" deploy/static \
    && python -m compileall -q app migrations deploy \
    && install -d -o flaskstack -g flaskstack -m 0755 /srv/static
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["deploy/docker-entrypoint.sh"]
CMD ["web"]
