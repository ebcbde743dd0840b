"""The Compose stack from the host: TLS and HTTP/2 with the ACME certificate, a user's visit through
nginx → gunicorn → Flask → Redis + Postgres, the shared security headers, static files from the
image, non-root containers, ports, the app's metrics, and a certificate renewal that nginx picks up
by reloading.

The renewal test runs last (file order): it changes what nginx serves.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from support import tls
from support.forms import SESSION_COOKIE, register, submit

ROOT = Path(__file__).resolve().parents[2]
SECURITY_HEADERS = ROOT / "nginx" / "snippets" / "security-headers.conf"
NGINX_DEFAULTS = ROOT / "nginx" / "defaults.env"


def served_certificate(stack, key: str = "ECDSA") -> dict[str, str]:
    """Serial and issuer of the certificate nginx serves for the site (ECDSA or RSA)."""
    sigalgs = {"ECDSA": "ecdsa_secp256r1_sha256", "RSA": "rsa_pss_rsae_sha256:rsa_pkcs1_sha256"}
    text = tls.served_certificate(
        stack.https_address, stack.site, stack.ca_cert, "-sigalgs", sigalgs[key],
        "-verify_return_error",
    )  # fmt: skip
    return {
        "serial": re.search(r"serial=(\w+)", text).group(1),
        "issuer": re.search(r"Issuer: (.*)", text).group(1),
        "names": text,
    }


def snippet_headers() -> dict[str, str]:
    """Header name → value as nginx/snippets/security-headers.conf adds them ($vars resolved)."""
    hsts = re.search(r'^HSTS_POLICY="([^"]*)"', NGINX_DEFAULTS.read_text(), re.M).group(1)
    headers = {}
    lines = re.findall(r"^add_header\s+(\S+)\s+(.+?)\s+always;", SECURITY_HEADERS.read_text(), re.M)
    for name, value in lines:
        value = value.strip('"')
        if value == "$flaskstack_hsts":
            value = hsts
        elif value.startswith("$"):
            continue  # Alt-Svc: depends on the nginx build (HTTP/3 or not)
        headers[name] = value
    return headers


def test_https_uses_http2_and_the_acme_certificate(stack):
    result = stack.curl("--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                        f"{stack.url}/healthz")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 200"
    for key in ("ECDSA", "RSA"):
        certificate = served_certificate(stack, key)
        assert "Pebble" in certificate["issuer"], certificate
        assert f"DNS:www.{stack.site}" in certificate["names"]


def test_http_redirects_to_https_and_serves_the_acme_path(stack):
    http = stack.env["HTTP_PORT"]
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
         "-H", f"Host: {stack.site}", f"http://{http}/login"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout == f"301 https://{stack.site}/login"


def test_security_headers_from_the_shared_snippet(stack, browser):
    expected = snippet_headers()
    assert "Content-Security-Policy" in expected and "Strict-Transport-Security" in expected
    for path in ("/", "/static/css/site.css", "/no-such-page"):
        response = browser.get(stack.url + path, timeout=15)
        for name, value in expected.items():
            assert response.headers.get(name) == value, (path, name)


def test_register_log_out_and_in_uses_session_and_database(stack, browser):
    home = browser.get(stack.url + "/", timeout=15)
    assert home.status_code == 200
    assert "Set-Cookie" not in home.headers

    name, password = register(browser, stack.url, "compose-")
    cookie = next(c for c in browser.cookies if c.name == SESSION_COOKIE)
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")

    title = "Post " + secrets.token_hex(4)
    created = submit(browser, f"{stack.url}/posts/new", title=title, body="Hello from Compose.")
    assert created.status_code == 200 and title in created.text

    logged_out = submit(browser, f"{stack.url}/logout", form_url=f"{stack.url}/")
    assert logged_out.status_code == 200
    assert browser.cookies.get(SESSION_COOKIE) is None

    again = submit(browser, f"{stack.url}/login", username=name, password=password)
    assert again.status_code == 200
    assert title in browser.get(stack.url + "/", timeout=15).text


def test_readiness_reports_postgres_and_redis(stack, browser):
    ready = browser.get(f"{stack.url}/readyz", timeout=15)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "postgres": "ok", "redis": "ok"}


def test_fingerprinted_static_files_come_precompressed_from_nginx(stack, browser):
    home = browser.get(stack.url + "/", timeout=15).text
    match = re.search(r'href="(/static/dist/css/site\.[0-9a-f]{8,}\.css)"', home)
    assert match, "the page does not link the fingerprinted stylesheet (no manifest in the image?)"
    css = browser.get(stack.url + match.group(1), headers={"Accept-Encoding": "gzip"}, timeout=15)
    assert css.status_code == 200
    assert css.headers["Content-Encoding"] == "gzip"
    assert css.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_containers_run_as_non_root_users(stack):
    for service in ("app", "worker", "scheduler", "metrics", "certbot", "pgbackrest"):
        uid = stack.compose("exec", "-T", service, "id", "-u").stdout.strip()
        assert uid not in ("", "0"), service
    assert stack.inspect("app")["Config"]["User"] == "10001:10001"


def test_only_nginx_publishes_ports_and_the_metrics_on_loopback(stack):
    lines = stack.compose("ps", "--format", "json").stdout.splitlines()
    services = [json.loads(line) for line in lines if line.strip()]
    published = {
        s["Service"]: {p["URL"] for p in s["Publishers"] or [] if p.get("PublishedPort")}
        for s in services
    }
    assert {service for service, addresses in published.items() if addresses} == {
        "nginx", "metrics"
    }  # fmt: skip
    assert published["metrics"] == {"127.0.0.1"}
    running = {s["Service"] for s in services}
    assert running >= {
        "nginx", "app", "worker", "scheduler", "metrics", "certbot", "redis", "postgres",
        "pgbackrest",
    }  # fmt: skip


def test_the_metrics_service_counts_requests_and_reads_the_queue(stack, browser):
    """What a Prometheus scrapes: the requests gunicorn's workers counted (by URL rule, never by
    path) and the blog's RQ queue, read from Redis."""
    missing = f"/no-such-page-{secrets.token_hex(4)}"  # a path of its own: past the microcache
    for path in ("/healthz", "/healthz", missing):
        browser.get(stack.url + path, timeout=15)
    address = stack.compose("port", "metrics", "9200").stdout.strip()
    scraper = requests.Session()
    scraper.trust_env = False  # no proxy between the host and its loopback

    def samples() -> dict[tuple[str, frozenset], float]:
        answer = scraper.get(f"http://{address}/metrics", timeout=15)
        assert answer.status_code == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        }

    requests_total = "flaskstack_http_requests_total"
    healthz = frozenset({"method": "GET", "endpoint": "/healthz", "status": "200"}.items())
    unmatched = frozenset({"method": "GET", "endpoint": "unmatched", "status": "404"}.items())
    deadline = time.monotonic() + 30  # a worker counts a request once its answer is out
    while (
        (found := samples()).get((requests_total, healthz), 0) < 2
        or found.get((requests_total, unmatched), 0) < 1
    ) and time.monotonic() < deadline:
        time.sleep(1)
    assert found.get((requests_total, healthz), 0) >= 2, found
    assert found.get((requests_total, unmatched), 0) >= 1, found
    endpoints = {dict(labels)["endpoint"] for name, labels in found if name == requests_total}
    assert missing not in endpoints
    assert found[("flaskstack_app_metrics_up", frozenset())] == 1
    assert ("flaskstack_rq_queue_jobs", frozenset({("queue", "flaskstack")})) in found
    assert found[("flaskstack_rq_workers", frozenset())] >= 1, "the worker service's heartbeat"


def test_the_scheduler_runs_the_apps_jobs_at_their_calendar_times(stack):
    """The blog's one job (flaskstack.toml: purge-deleted, daily), as the hosts' timer runs it."""
    log = stack.compose("logs", "--no-color", "scheduler").stdout
    assert re.search(r"purge-deleted: next run \d{4}-\d\d-\d\d 00:00:00 UTC \(daily\)", log), log
    job = stack.compose("exec", "-T", "scheduler", "flask", "--app", "app", "purge-deleted",
                        "--days", "30", check=False)  # fmt: skip
    assert job.returncode == 0, job.stderr


def test_every_service_is_healthy(stack):
    lines = stack.compose("ps", "--format", "json").stdout.splitlines()
    health = {s["Service"]: s["Health"] for s in map(json.loads, filter(str.strip, lines))}
    assert all(state == "healthy" for state in health.values()), health


def test_compose_file_names_each_missing_required_variable(stack, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [stack.docker, "compose", "--project-directory", str(ROOT),
         "--file", str(ROOT / "docker-compose.yml"), "--env-file", str(empty), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    message = r"required variable (\w+) is missing a value: set \1 in \.env"
    assert re.search(message, result.stderr), result.stderr


def test_env_template_filled_in_is_a_valid_compose_configuration(stack, tmp_path):
    """What a user does first: copy .env-template to .env and fill in its empty secrets."""
    filled = {
        "SECRET_KEY": secrets.token_hex(32), "POSTGRES_PASSWORD": secrets.token_hex(16),
        "APP_DB_PASSWORD": secrets.token_hex(16), "REDIS_PASSWORD": secrets.token_hex(16),
        "SITE_HOST": "example.org", "BACKUP_CIPHER_PASS": secrets.token_hex(32),
    }  # fmt: skip
    lines = (ROOT / ".env-template").read_text().splitlines()
    env = tmp_path / ".env"
    env.write_text(
        "\n".join(
            f"{line}{filled[line[:-1]]}" if line.endswith("=") and line[:-1] in filled else line
            for line in lines
        )
    )
    result = subprocess.run(
        [stack.docker, "compose", "--project-directory", str(ROOT),
         "--file", str(ROOT / "docker-compose.yml"), "--env-file", str(env),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    app = json.loads(result.stdout)["services"]["app"]["environment"]
    assert app["DATABASE_URL"] == (
        f"postgresql://flaskstack:{filled['APP_DB_PASSWORD']}@postgres:5432/flaskstack"
    )
    assert app["SITE_URL"] == "https://example.org"
    assert app["FORWARDED_ALLOW_IPS"] == "172.31.232.0/24"
    postgres = json.loads(result.stdout)["services"]["postgres"]["environment"]
    assert postgres["PGBACKREST_REPO1_CIPHER_PASS"] == filled["BACKUP_CIPHER_PASS"]


def test_the_s3_repository_file_moves_the_repository_into_a_bucket(stack, tmp_path):
    """deploy/compose/pgbackrest-s3.yml over docker-compose.yml: pgBackRest's repository in the
    bucket for Postgres and the pgbackrest service, which alone get a way out."""
    env = tmp_path / ".env"
    env.write_text(
        stack.env_file.read_text()
        + "BACKUP_S3_BUCKET=backups\nBACKUP_S3_KEY=key\nBACKUP_S3_KEY_SECRET=secret\n"
    )
    result = subprocess.run(
        [stack.docker, "compose", "--project-directory", str(ROOT),
         "--file", str(ROOT / "docker-compose.yml"),
         "--file", str(ROOT / "deploy" / "compose" / "pgbackrest-s3.yml"),
         "--env-file", str(env), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    for service in ("postgres", "pgbackrest"):
        environment = config["services"][service]["environment"]
        assert environment["PGBACKREST_REPO1_TYPE"] == "s3"
        assert environment["PGBACKREST_REPO1_S3_BUCKET"] == "backups"
        assert environment["PGBACKREST_REPO1_CIPHER_TYPE"] == "aes-256-cbc"
        assert set(config["services"][service]["networks"]) == {"backend", "backup-egress"}
    assert "backup-egress" not in config["services"]["app"]["networks"]
    assert config["networks"]["backend"]["internal"] is True


def test_local_mode_issues_both_certificates_from_a_kept_local_ca(stack, tmp_path):
    """TLS_MODE=local's issuer, run in the certbot image against the certificates volume."""
    lineage = "/etc/letsencrypt/live/local-check-{}/fullchain.pem"

    def in_certbot(*command: str) -> str:
        return stack.compose(
            "run", "--rm", "--no-deps", "--env", "TLS_CERT_NAME=local-check",
            "--env", "SITE_HOST=localhost", "--env", "SITE_ALIASES=127.0.0.1",
            "--entrypoint", command[0], "certbot", *command[1:],
        ).stdout  # fmt: skip

    first = in_certbot("python3", "/opt/flaskstack/local_certificates.py")
    assert "issued local-check-ecdsa" in first and "issued local-check-rsa" in first
    second = in_certbot("python3", "/opt/flaskstack/local_certificates.py")
    assert "issued" not in second and "created" not in second

    root = tmp_path / "root.pem"
    root.write_text(in_certbot("cat", "/etc/letsencrypt/local-ca/root.pem"))
    for key_type in ("ecdsa", "rsa"):
        chain = tmp_path / f"{key_type}.pem"
        chain.write_text(in_certbot("cat", lineage.format(key_type)))
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", str(root), "-purpose", "sslserver", str(chain)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        names = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(chain)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "DNS:localhost" in names and "IP Address:127.0.0.1" in names


def test_forced_renewal_is_served_after_a_reload_not_a_restart(stack):
    before = {key: served_certificate(stack, key)["serial"] for key in ("ECDSA", "RSA")}
    nginx = stack.inspect("nginx")
    renewed = stack.compose(
        "exec", "-T", "certbot",
        "certbot", "renew", "--force-renewal", "--no-random-sleep-on-renew", "--non-interactive",
        timeout=300,
    )  # fmt: skip
    assert "Congratulations, all renewals succeeded" in renewed.stdout + renewed.stderr

    deadline = time.monotonic() + 60
    for key, old_serial in before.items():
        while served_certificate(stack, key)["serial"] == old_serial:
            assert time.monotonic() < deadline, f"nginx still serves the old {key} certificate"
            time.sleep(1)
    after = stack.inspect("nginx")
    # Same container, same start, same master process: a reload, not a restart.
    assert after["Id"] == nginx["Id"]
    assert after["State"]["StartedAt"] == nginx["State"]["StartedAt"]
    assert after["State"]["Pid"] == nginx["State"]["Pid"]
    assert after["RestartCount"] == nginx["RestartCount"]
    logs = stack.compose("logs", "--no-color", "nginx").stdout
    assert "the certificates changed; nginx reloaded" in logs
