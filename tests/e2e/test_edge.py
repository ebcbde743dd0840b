"""The sandbox seen from outside: TLS, HTTP/2, the ACME certificate, redirects, open ports."""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import subprocess

import pytest


def test_https_speaks_http2_over_tls13_with_the_acme_certificate(sandbox):
    result = sandbox.curl(
        "--http2", "-o", "/dev/null", "-w", "%{http_version} %{response_code} %{ssl_verify_result}",
        "-v", f"https://{sandbox.domain}/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 200 0"
    assert "TLSv1.3" in result.stderr


def test_certificate_is_issued_by_the_acme_ca_for_the_domain(sandbox):
    text = sandbox.served_certificate()
    assert re.search(r"Issuer: .*Pebble", text), text
    assert f"DNS:{sandbox.domain}" in text and f"DNS:www.{sandbox.domain}" in text


@pytest.mark.parametrize("key_type", ["ECDSA", "RSA"])
def test_ecdsa_and_rsa_certificates_are_served_side_by_side(sandbox, key_type):
    # TLS 1.2 lets the client pick the certificate type by cipher suite.
    cipher = {"ECDSA": "ECDHE-ECDSA-AES128-GCM-SHA256", "RSA": "ECDHE-RSA-AES128-GCM-SHA256"}
    text = sandbox.served_certificate("-tls1_2", "-cipher", cipher[key_type])
    expected = "id-ecPublicKey" if key_type == "ECDSA" else "rsaEncryption"
    assert f"Public Key Algorithm: {expected}" in text


def test_plain_http_redirects_to_https_with_301(sandbox):
    result = sandbox.curl("-o", "/dev/null", "-w", "%{response_code} %{redirect_url}",
                          f"http://{sandbox.domain}/some/page?x=1")  # fmt: skip
    assert result.stdout == f"301 https://{sandbox.domain}/some/page?x=1"


def test_acme_challenge_path_is_served_over_plain_http(sandbox):
    """The HTTP-01 path must not redirect: a missing token is a plain 404 on port 80."""
    missing = f"http://{sandbox.domain}/.well-known/acme-challenge/no-such-token"
    result = sandbox.curl("-o", "/dev/null", "-w", "%{response_code}", missing)
    assert result.stdout == "404"


def test_unknown_host_gets_neither_certificate_nor_content(sandbox):
    handshake = subprocess.run(
        ["openssl", "s_client", "-connect", f"{sandbox.edge['ip']}:443",
         "-servername", "unknown.example"],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "BEGIN CERTIFICATE" not in handshake.stdout
    plain = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-H", "Host: unknown.example",
         f"http://{sandbox.edge['ip']}/"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert plain.stdout == "" and "Empty reply from server" in plain.stderr


def open_tcp_ports(sandbox, ip: str, ports: list[int]) -> set[int]:
    """Which of these ports accept a TCP connection, seen from the probe (another host)."""
    script = (
        "import socket,sys\n"
        "for p in map(int, sys.argv[2:]):\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n"
        "        s.connect((sys.argv[1], p)); print(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "    finally:\n"
        "        s.close()\n"
    )
    result = subprocess.run(
        ["ip", "netns", "exec", sandbox.probe_netns, "python3", "-c", script, ip,
         *map(str, ports)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return {int(line) for line in result.stdout.split()}


def test_only_ssh_http_and_https_answer_from_another_host(sandbox):
    candidates = [22, 25, 80, 443, 5432, 6379, 8000, 8080, 9000, 11211]
    for host in sandbox.hosts:
        if "edge" in host["groups"]:
            assert open_tcp_ports(sandbox, host["ip"], candidates) == {22, 80, 443}, host
        else:
            assert {80, 443}.isdisjoint(open_tcp_ports(sandbox, host["ip"], candidates)), host


APP_UNIX_SOCKET = "/run/flaskstack-web.sock"  # roles/flaskstack/defaults/main.yml: app_unix_socket


def test_nginx_reaches_its_own_hosts_app_through_a_unix_socket_only_nginx_may_use(sandbox):
    """App hosts elsewhere over TCP on their private address; gunicorn on the edge host itself
    (a single host) over the unix socket, which nginx's workers (www-data) may connect to and
    other users may not."""
    upstream = sandbox.ssh(sandbox.edge, "cat /etc/nginx/flaskstack/upstream.conf").stdout
    servers = re.findall(r"^\s*server (\S+)", upstream, flags=re.MULTILINE)
    app_hosts = sandbox.hosts_in("app")
    assert servers == [
        f"unix:{APP_UNIX_SOCKET}" if host["name"] == sandbox.edge["name"] else f"{host['ip']}:8000"
        for host in app_hosts
    ], upstream
    if sandbox.edge not in app_hosts:
        return
    status = sandbox.ssh(sandbox.edge, f"sudo stat -c '%F %U:%G %a' {APP_UNIX_SOCKET}").stdout
    assert status.strip() == "socket root:www-data 660"
    healthz = (
        f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 -H 'Host: {sandbox.domain}'"
        f" --unix-socket {APP_UNIX_SOCKET} http://app/healthz"
    )
    as_nginx = sandbox.ssh(sandbox.edge, f"sudo -u www-data {healthz}", check=False)
    assert as_nginx.stdout == "200", as_nginx
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect('{APP_UNIX_SOCKET}')"
    as_other = sandbox.ssh(sandbox.edge, f'sudo -u nobody python3 -c "{connect}"', check=False)
    assert "PermissionError: [Errno 13]" in as_other.stderr, as_other


def on_edge(sandbox, command: str) -> str:
    """Run a client on the edge host itself: Debian 13's OpenSSL 3.5 and curl know PQ and QUIC."""
    return sandbox.ssh(sandbox.edge, command).stdout


def test_tls13_key_exchange_is_hybrid_post_quantum(sandbox):
    handshake = on_edge(
        sandbox,
        f"openssl s_client -connect 127.0.0.1:443 -servername {sandbox.domain} -brief"
        " </dev/null 2>&1",
    )
    assert "Protocol version: TLSv1.3" in handshake, handshake
    assert re.search(r"(Negotiated TLS1.3 group|Peer Temp Key): X25519MLKEM768", handshake), (
        handshake
    )


def test_http3_is_announced_and_answers(sandbox, browser):
    home = browser.get(sandbox.url + "/", timeout=15)
    assert home.headers["Alt-Svc"] == 'h3=":443"; ma=86400'
    # -k: this checks the protocol; the certificate is checked over TCP above.
    version = on_edge(
        sandbox,
        f"curl -sS -k --http3-only --resolve {sandbox.domain}:443:127.0.0.1"
        f" -o /dev/null -w '%{{http_version}} %{{response_code}}' https://{sandbox.domain}/",
    )
    assert version == "3 200"


SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def stylesheet_path(html: str) -> str:
    return re.search(r'<link rel="stylesheet" href="([^"]+)"', html).group(1)


def test_security_headers_on_pages_api_errors_static_files_and_404s(sandbox, browser):
    home = browser.get(sandbox.url + "/", timeout=15)
    responses = {
        "page": home,
        "api error": browser.get(sandbox.url + "/api/v1/posts/999999999", timeout=15),
        "static file": browser.get(sandbox.url + stylesheet_path(home.text), timeout=15),
        "404": browser.get(sandbox.url + "/no/such/page", timeout=15),
        "static 404": browser.get(sandbox.url + "/static/no-such-file.css", timeout=15),
    }
    assert [r.status_code for r in responses.values()] == [200, 404, 200, 404, 404]
    for kind, response in responses.items():
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (kind, name, response.headers)
        policy = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy, kind
        assert "Permissions-Policy" in response.headers, kind
    assert responses["api error"].json()["message"]


def test_fingerprinted_static_files_are_precompressed_and_immutable(sandbox, browser):
    path = stylesheet_path(browser.get(sandbox.url + "/", timeout=15).text)
    assert re.fullmatch(r"/static/dist/css/site\.[0-9a-f]{8,}\.css", path), path
    css = browser.get(sandbox.url + path, headers={"Accept-Encoding": "gzip"}, timeout=15)
    assert css.headers["Content-Encoding"] == "gzip"
    assert css.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # gzip_static serves the .gz file made at release build time: a fixed ETag/length, no chunking.
    assert "Content-Length" in css.headers


def test_www_redirects_to_the_apex(sandbox):
    result = sandbox.curl(
        "-o", "/dev/null", "-w", "%{response_code} %{redirect_url}",
        f"https://www.{sandbox.domain}/posts?x=1",
    )  # fmt: skip
    assert result.stdout == f"301 https://{sandbox.domain}/posts?x=1"


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_sessions_resume(sandbox, version):
    """A returning client skips the full handshake (session cache; TLS 1.3 stateful tickets)."""
    context = ssl.create_default_context(cafile=sandbox.ca_cert)
    context.minimum_version = context.maximum_version = ssl.TLSVersion[version]

    def visit(session=None):
        request = f"HEAD / HTTP/1.1\r\nHost: {sandbox.domain}\r\nConnection: close\r\n\r\n"
        with (
            socket.create_connection((sandbox.edge["ip"], 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=sandbox.domain, session=session) as tls,
        ):
            tls.sendall(request.encode())
            while tls.recv(65536):  # TLS 1.3 tickets arrive after the handshake
                pass
            return tls.session, tls.session_reused

    session, reused = visit()
    assert not reused
    assert visit(session)[1], f"the {version} session was not resumed"


def test_nginx_and_the_app_log_a_request_under_the_same_id(sandbox, browser):
    """One id per request (proxy.conf's X-Request-ID): nginx's access log line and the app's
    carry it, so either leads to the other."""
    path = "/?trace=" + secrets.token_hex(6)
    answer = browser.get(f"https://{sandbox.domain}{path}", timeout=15)
    assert answer.status_code == 200
    request_id = answer.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    nginx_line = sandbox.nginx_log_lines(path)
    assert f"rid={request_id}" in nginx_line, nginx_line
    app_lines = "".join(
        line + "\n"
        for host in sandbox.hosts_in("app")
        for line in sandbox.journal(host, "flaskstack-web", "-10min").splitlines()
        if path in line
    )
    assert f"rid={request_id}" in app_lines, app_lines
