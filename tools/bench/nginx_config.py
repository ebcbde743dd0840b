"""nginx's configuration for the bench, rendered from the repository's own sources the way the
Ansible role renders it: Debian's nginx.conf (paths moved into the work directory),
nginx/snippets, the nginx/templates filled from nginx/defaults.env + nginx/detect-features.sh,
the upstream from the role's upstream.conf.j2 and defaults. Bench-only differences: the
certificates come from a throwaway CA instead of /etc/letsencrypt, the microcache lives in the
work directory, and ceiling-location.conf is
inserted into the sites."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jinja2

from tools.bench.layout import (
    APP_SOCKET,
    BENCH_DIR,
    CERT_NAME,
    REPO,
    SITE_ALIASES,
    SITE_HOST,
    role_defaults,
)
from tools.bench.processes import BenchError, run

SITES = ("flaskstack.conf", "flaskstack-limits.conf", "flaskstack-https.conf")


def nginx_placeholders(static_root: Path) -> dict[str, str]:
    """What roles/nginx/tasks/features.yml collects: defaults.env, detected features, site."""
    values = {}
    for line in (REPO / "nginx/defaults.env").read_text().splitlines():
        match = re.match(r'^([A-Z][A-Z0-9_]*)="?(.*?)"?$', line)
        if match:
            values[match[1]] = match[2]
    detected = run("sh", REPO / "nginx/detect-features.sh", capture_output=True).stdout
    values.update(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", detected, flags=re.MULTILINE))
    values.update(
        SITE_HOST=SITE_HOST,
        SITE_ALIASES=SITE_ALIASES,
        TLS_CERT_NAME=CERT_NAME,
        STATIC_ROOT=str(static_root).rstrip("/"),
    )
    return values


def fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    missing = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", template))
    if missing:
        raise BenchError(f"no value for nginx placeholders: {', '.join(sorted(missing))}")
    return template


def replace_once(text: str, old: str, new: str) -> str:
    """Edit a file we do not own, loudly: if it changed shape, stop instead of measuring
    something else."""
    if text.count(old) != 1:
        raise BenchError(f"expected exactly one {old!r} in the nginx configuration")
    return text.replace(old, new)


class NginxConfig:
    """A complete nginx configuration directory, laid out like /etc/nginx on a host."""

    def __init__(
        self, root: Path, certs: Path, static_root: Path, logs: Path, extra: str = ""
    ) -> None:
        """`root` is a new directory in the bench's work directory (next to APP_SOCKET)."""
        self.root = root
        self.conf = root / "nginx.conf"
        self.pid_file = root / "nginx.pid"
        self.error_log = logs / f"nginx-{root.name}-error.log"
        self.access_log = logs / f"nginx-{root.name}-access.log"
        root.mkdir(parents=True)
        shutil.copytree(REPO / "nginx/snippets", root / "flaskstack/snippets")
        (root / "conf.d").mkdir()
        # Bench only: nginx closes a connection after 1000 requests, a browser then opens a new
        # one, but h2load's timed mode does not (the load would stop). The difference is one
        # handshake per 1000 requests: small beside the requests themselves.
        (root / "conf.d/zz-bench.conf").write_text("keepalive_requests 1000000;\n")
        if extra:  # --nginx-http: a setting on trial, not (yet) in nginx/
            (root / "conf.d/zz-bench-trial.conf").write_text(extra + "\n")
        (root / "bench").mkdir()
        shutil.copy(BENCH_DIR / "ceiling-location.conf", root / "bench")
        self.write_main()
        self.write_upstream()
        values = nginx_placeholders(static_root)
        values["MICROCACHE_DIR"] = str(root / "microcache")  # not the machine's /var/cache
        self.features = {k: values[k] for k in ("TLS_CURVES", "HTTP_PROTOCOLS", "BROTLI_STATIC")}
        for name in SITES:
            text = fill((REPO / f"nginx/templates/{name}.template").read_text(), values)
            (root / "conf.d" / name).write_text(self.bench_site(name, text, certs))

    def write_main(self) -> None:
        """Debian's nginx.conf with its paths moved into the work directory."""
        main = Path("/etc/nginx/nginx.conf").read_text()
        main = replace_once(main, "pid /run/nginx.pid;", f"pid {self.pid_file};")
        main = replace_once(
            main, "error_log /var/log/nginx/error.log;", f"error_log {self.error_log};"
        )
        main = replace_once(
            main, "access_log /var/log/nginx/access.log;", f"access_log {self.access_log};"
        )
        main = replace_once(
            main, "include /etc/nginx/conf.d/*.conf;", f"include {self.root}/conf.d/*.conf;"
        )
        # The role deletes the distribution's default site; nothing else lives there.
        main = replace_once(main, "include /etc/nginx/sites-enabled/*;", "")
        self.conf.write_text(main)

    def write_upstream(self) -> None:
        """The role's upstream.conf.j2 with its defaults, the app on the bench's unix socket."""
        defaults = role_defaults("nginx")
        upstream = jinja2.Template(
            (REPO / "ansible/roles/nginx/templates/upstream.conf.j2").read_text()
        )
        (self.root / "flaskstack/upstream.conf").write_text(
            upstream.render(
                ansible_managed="rendered by tools/bench/nginx_config.py",
                nginx_upstream_servers=[f"unix:{self.root.parent / APP_SOCKET}"],
                nginx_upstream_max_fails=defaults["nginx_upstream_max_fails"],
                nginx_upstream_fail_timeout=defaults["nginx_upstream_fail_timeout"],
                nginx_upstream_keepalive=defaults["nginx_upstream_keepalive"],
                nginx_drained_app_addresses=[],
                nginx_acme_other_edges=[],
            )
        )

    def bench_site(self, name: str, text: str, certs: Path) -> str:
        """A rendered site with the bench's differences: the ceiling location, and for the TLS
        site the throwaway certificates and its access log in the work directory."""
        ceiling = f"    include {self.root}/bench/ceiling-location.conf;\n\n"
        if name == "flaskstack.conf":
            # The same fixed 200 without TLS: what a connection costs nginx apart from TLS.
            redirect = "    location / {\n        return 301"
            text = replace_once(text, redirect, ceiling + redirect)
        if name == "flaskstack-https.conf":
            text = text.replace("/etc/letsencrypt/live/", f"{certs}/live/")
            # The site's own (buffered) access log goes where nginx.conf's went.
            text = replace_once(
                text, "access_log /var/log/nginx/access.log ", f"access_log {self.access_log} "
            )
            static = "    location /static/ {"
            text = replace_once(text, static, ceiling + static)
        return text

    def only_certificate(self, kind: str) -> None:
        """Serve one certificate type (ecdsa or rsa): the client then cannot choose."""
        https = self.root / "conf.d/flaskstack-https.conf"
        other = {"ecdsa": "-rsa/", "rsa": "-ecdsa/"}[kind]
        lines = https.read_text().splitlines(keepends=True)
        kept = [
            line
            for line in lines
            if not (line.lstrip().startswith("ssl_certificate") and other in line)
        ]
        if len(lines) - len(kept) != 2:
            raise BenchError(f"could not drop the {other.strip('-/')} certificate lines")
        https.write_text("".join(kept))


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and an ECDSA P-256 + an RSA 2048 certificate for the site's names; returns
    the CA's certificate."""
    directory.mkdir(parents=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", ca_key, "-out", ca_cert, "-days", "2",
        "-subj", "/CN=flaskstack bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        capture_output=True,
    )  # fmt: skip
    extensions = directory / "leaf.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{SITE_HOST},DNS:www.{SITE_HOST}\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    algorithms = {
        "ecdsa": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    }
    for kind, options in algorithms.items():
        lineage = directory / "live" / f"{CERT_NAME}-{kind}"
        lineage.mkdir(parents=True)
        key, csr, cert = lineage / "privkey.pem", lineage / "csr.pem", lineage / "cert.pem"
        run("openssl", "genpkey", *options, "-out", key, capture_output=True)
        run("openssl", "req", "-new", "-key", key, "-subj", f"/CN={SITE_HOST}", "-out", csr,
            capture_output=True)  # fmt: skip
        run(
            "openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
            "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", cert,
            capture_output=True,
        )  # fmt: skip
        # Like Let's Encrypt's fullchain.pem: the leaf, then the issuer.
        (lineage / "fullchain.pem").write_text(cert.read_text() + ca_cert.read_text())
    return ca_cert
