"""Hostile and broken requests against the deployed edge: never a 5xx, a leak or a hang.

Most cases go over raw TLS sockets (ALPN http/1.1) so that every byte is what an attacker
would send: Python's HTTP clients normalise paths, refuse bad headers and fix framing. Every
case counts its requests and answers; the last test prints one table of them all.

Auth endpoints are rate-limited (nginx: 10/min with a burst of 5, the app: 10/min, 50/h per
client address): the module registers two users and sends only a handful of other auth POSTs.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import ssl
import time
from collections import Counter

import pytest
import requests
from markupsafe import escape

SESSION_COOKIE = "__Host-session"
# What an error may never show: stack traces, source paths, SQL errors, software versions.
LEAK_PATTERNS = re.compile(
    rb"Traceback \(most recent call last\)|File \"/|site-packages|/srv/flaskstack|/etc/nginx"
    rb"|psycopg|sqlalchemy|syntax error at or near|werkzeug|jinja2\.|nginx/\d|gunicorn/\d"
    rb"|Python/\d",
    re.IGNORECASE,
)
# Strings that mean something to SQL, HTML, Jinja, printf or a shell: stored and shown as text.
INJECTIONS = [
    "' OR 1=1--",
    '"; DROP TABLE posts;--',
    "<script>alert(1)</script>",
    "{{7*7}}",
    "%s%n%x",
    "${7*7}",
    "<img src=x onerror=alert(1)>",
    "1; SELECT pg_sleep(10)",
    "$(reboot)",
]
# Strings whose meaning as SQL would change the query: tried where the app expects a number.
SQL_IN_NUMBERS = ["1 OR 1=1", "1' OR '1'='1", "1;DROP TABLE posts", "1 UNION SELECT 1", "-1"]
ANSWER_TIMEOUT = 15


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, "the form carries no CSRF token"
    return match.group(1)


class Case:
    """One row of the table: what was sent, what came back, and whether every check held."""

    def __init__(self, name: str):
        self.name = name
        self.sent = 0
        self.answers: Counter[str] = Counter()
        self.verdict = "FAIL"

    def count(self, answer: int | str) -> None:
        self.sent += 1
        self.answers[str(answer)] += 1

    def summary(self) -> str:
        return ", ".join(f"{k}×{v}" for k, v in sorted(self.answers.items()))


class Ledger:
    def __init__(self):
        self.cases: list[Case] = []
        # For the app's log: the sandbox hosts share this machine's clock.
        self.started_at = int(time.time()) - 1

    @contextlib.contextmanager
    def case(self, name: str):
        case = Case(name)
        self.cases.append(case)
        try:
            yield case
            case.verdict = "ok"
        finally:
            print(f"{name}: {case.sent} requests: {case.summary()} -> {case.verdict}")

    def table(self) -> str:
        width = max(len(c.name) for c in self.cases)
        answers = max(len(c.summary()) for c in self.cases)
        lines = [f"{'case':<{width}}  sent  {'answers':<{answers}}  verdict"]
        lines += [
            f"{c.name:<{width}}  {c.sent:>4}  {c.summary():<{answers}}  {c.verdict}"
            for c in self.cases
        ]
        total = sum(c.sent for c in self.cases)
        lines.append(f"{'total':<{width}}  {total:>4}")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


# --- raw HTTP/1.1 over TLS --------------------------------------------------------------------


class Response:
    def __init__(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        found = [v for k, v in self.headers if k.lower() == wanted]
        return found[0].decode("latin-1") if found else None

    @property
    def raw_head(self) -> bytes:
        return b"\r\n".join(k + b": " + v for k, v in self.headers)


def parse_responses(stream: bytes) -> list[Response]:
    """Split a byte stream into the HTTP/1.1 responses it holds (Content-Length or chunked)."""
    responses = []
    while stream:
        head, sep, rest = stream.partition(b"\r\n\r\n")
        assert sep, f"a truncated response: {stream[:300]!r}"
        status_line, *lines = head.split(b"\r\n")
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) ?(.*)", status_line)
        assert match, f"not an HTTP response: {stream[:300]!r}"
        headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines]
        response = Response(int(match.group(1)), match.group(2), headers, b"")
        if response.header("Transfer-Encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
        else:
            size = int(response.header("Content-Length") or 0)
            body, rest = rest[:size], rest[size:]
        response.body = body
        responses.append(response)
        stream = rest
    return responses


def tls_context(sandbox) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=sandbox.ca_cert)
    context.set_alpn_protocols(["http/1.1"])
    return context


def open_tls(sandbox, timeout: float = ANSWER_TIMEOUT) -> ssl.SSLSocket:
    raw = socket.create_connection((sandbox.edge["ip"], 443), timeout=timeout)
    return tls_context(sandbox).wrap_socket(raw, server_hostname=sandbox.domain)


def read_until_closed(tls: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection (or our timeout ends)."""
    data = b""
    with contextlib.suppress(ssl.SSLEOFError, ConnectionResetError):
        while chunk := tls.recv(65536):
            data += chunk
    return data


def exchange(sandbox, payload: bytes) -> list[Response]:
    """Send bytes as they are over one TLS connection; return the responses until it closes.

    A server that neither answers nor closes within ANSWER_TIMEOUT fails the case (a hang).
    """
    with open_tls(sandbox) as tls:
        tls.sendall(payload)
        try:
            return parse_responses(read_until_closed(tls))
        except TimeoutError:
            pytest.fail(f"no answer and no close within {ANSWER_TIMEOUT} s: {payload[:120]!r}")


def request_bytes(
    target: bytes | str,
    headers: list[bytes | str] = (),
    body: bytes = b"",
    method: str = "GET",
    host: str | None = "site",
    sandbox=None,
) -> bytes:
    """An HTTP/1.1 request, byte for byte; host="site" means the site's own name."""
    lines = [f"{method} ".encode() + _b(target) + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + (sandbox.domain if host == "site" else host).encode())
    lines += [_b(h) for h in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def check_answer(case: Case, response: Response | requests.Response, allowed: set[int]):
    """Count one answer, then: an expected status, no 5xx, nothing leaked."""
    if isinstance(response, requests.Response):
        status = response.status_code
        head = "\r\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
        body = response.content
    else:
        status, head, body = response.status, response.raw_head, response.body
    case.count(status)
    where = f"{case.name}: {status} {body[:300]!r}"
    assert status in allowed, where
    leak = LEAK_PATTERNS.search(head + b"\n" + body)
    assert leak is None, f"{where}: leaks {leak.group(0)!r}"
    # Every answer of the site carries HSTS, nginx's own early errors (400, 414, 501…) too.
    assert re.search(rb"(?im)^strict-transport-security: max-age=\d+", head), f"{where}: no HSTS"


def one_answer(sandbox, case: Case, payload: bytes, allowed: set[int]) -> Response:
    responses = exchange(sandbox, payload)
    assert len(responses) == 1, f"{case.name}: {len(responses)} responses to {payload[:120]!r}"
    check_answer(case, responses[0], allowed)
    return responses[0]


def closed_without_answer(sandbox, case: Case, payload: bytes) -> None:
    """nginx's 444: the connection closes and not a byte of the site is served."""
    assert exchange(sandbox, payload) == [], f"{case.name}: answered {payload[:120]!r}"
    case.count("closed")


# --- HTTPS clients with a session ------------------------------------------------------------


def new_browser(sandbox) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`
    session.verify = sandbox.ca_cert
    session.headers["User-Agent"] = "flaskstack-e2e-hostile"
    return session


def post_form(browser, url: str, form_url: str | None = None, **fields):
    """Post a form with the CSRF token of the page it is on, as a browser would."""
    page = browser.get(form_url or url, timeout=ANSWER_TIMEOUT)
    assert page.status_code == 200, page.text[:300]
    data = {"csrf_token": csrf_token(page.text), **fields}
    return browser.post(url, data=data, headers={"Referer": page.url}, timeout=ANSWER_TIMEOUT)


def auth_post(send):
    """An auth endpoint's answer, waiting out nginx's limit (one request per 6 s) when hit."""
    for _ in range(4):
        response = send()
        if response.status_code != 429:
            return response
        time.sleep(6.5)
    return response


@pytest.fixture(scope="module")
def users(sandbox) -> dict[str, dict]:
    """Two registered users, each with a logged-in browser, an API token and one post."""
    made = {}
    for role in ("alice", "mallory"):
        name = f"hostile-{role}-" + secrets.token_hex(3)
        password = secrets.token_urlsafe(16)
        browser = new_browser(sandbox)
        registered = auth_post(
            lambda b=browser, n=name, p=password: post_form(
                b,
                f"{sandbox.url}/register",
                username=n,
                email=f"{n}@example.org",
                password=p,
                confirm=p,
            )
        )
        assert registered.status_code == 200, registered.text[:300]
        # The token page is a signed-in form, not the rate-limited /api/v1/tokens.
        issued = post_form(browser, f"{sandbox.url}/settings/token")
        token = re.search(r"fst_[A-Za-z0-9_-]+", issued.text).group(0)
        api = {"Authorization": f"Bearer {token}"}
        created = browser.post(
            f"{sandbox.url}/api/v1/posts",
            json={"title": f"{role}'s post", "body": "Original."},
            headers=api,
            timeout=ANSWER_TIMEOUT,
        )
        assert created.status_code == 201, created.text
        made[role] = {
            "name": name,
            "password": password,
            "browser": browser,
            "api": api,
            "post": created.json(),
        }
    return made


# --- the corpus -------------------------------------------------------------------------------


def test_oversized_request_lines_headers_and_cookies_get_a_4xx(sandbox, ledger):
    with ledger.case("oversized URI/headers/cookie") as case:
        too_long = {400, 414, 431, 494}
        one_answer(sandbox, case, request_bytes("/" + "a" * 9000, sandbox=sandbox), too_long)
        # Under nginx's 8k buffer but over gunicorn's request line limit (4094).
        one_answer(sandbox, case, request_bytes("/?q=" + "a" * 6000, sandbox=sandbox), too_long)
        big = ["X-Big: " + "b" * 10_000]
        one_answer(sandbox, case, request_bytes("/", big, sandbox=sandbox), too_long)
        many = [f"X-Header-{i}: {'h' * 90}" for i in range(200)]
        one_answer(sandbox, case, request_bytes("/", many, sandbox=sandbox), too_long)
        lots = [f"X-Header-{i}: {'h' * 90}" for i in range(500)]
        one_answer(sandbox, case, request_bytes("/", lots, sandbox=sandbox), too_long)
        huge_cookie = ["Cookie: a=" + "c" * 12_000]
        one_answer(sandbox, case, request_bytes("/", huge_cookie, sandbox=sandbox), too_long)
        # A large cookie that still fits every limit is just ignored.
        big_cookie = ["Cookie: tracking=" + "c" * 6000]
        one_answer(sandbox, case, request_bytes("/", big_cookie, sandbox=sandbox), {200})


def test_oversized_bodies_get_413_or_400_with_a_clear_message(sandbox, ledger, users):
    alice = users["alice"]
    with ledger.case("oversized bodies") as case:
        api = f"{sandbox.url}/api/v1/posts"
        too_big_for_nginx = json.dumps({"title": "t", "body": "x" * (3 * 1024 * 1024)})
        too_big_for_app = json.dumps({"title": "t", "body": "x" * (1536 * 1024)})
        for body in (too_big_for_nginx, too_big_for_app):
            answer = alice["browser"].post(
                api,
                data=body,
                headers={**alice["api"], "Content-Type": "application/json"},
                timeout=60,
            )
            check_answer(case, answer, {413})
            assert "too large" in answer.json()["message"], answer.text[:300]
        too_long_field = alice["browser"].post(
            api, json={"title": "t" * 201, "body": "b"}, headers=alice["api"], timeout=60
        )
        check_answer(case, too_long_field, {400})
        assert too_long_field.json() == {"message": "title must be at most 200 characters."}

        browser = alice["browser"]
        form = f"{sandbox.url}/posts/new"
        token = csrf_token(browser.get(form, timeout=ANSWER_TIMEOUT).text)
        for size, status, message in [
            (3 * 1024 * 1024, 413, "Request Entity Too Large"),  # nginx's page
            (1536 * 1024, 413, "The request is too large (the limit is 1024 KiB)."),
            (25_000, 400, "Text must be at most 20000 characters."),
        ]:
            answer = browser.post(
                form,
                data={"csrf_token": token, "title": "t", "body": "x" * size},
                headers={"Referer": form},
                timeout=60,
            )
            check_answer(case, answer, {status})
            assert answer.headers["Content-Type"].startswith("text/html"), answer.headers
            assert message in answer.text, answer.text[:500]


def test_slow_clients_are_cut_off_while_others_are_served(sandbox, ledger):
    """Slowloris: headers trickled a byte a second; a body that stops half way.

    nginx gives the whole header CLIENT_HEADER_TIMEOUT (10 s) however it trickles, and a body
    CLIENT_BODY_TIMEOUT (15 s) between reads: both close long before our 40 s deadline, and
    normal requests keep being answered meanwhile.
    """
    with ledger.case("slow clients (slowloris, slow body)") as case:
        slow: dict[ssl.SSLSocket, str] = {}
        for i in range(8):
            tls = open_tls(sandbox)
            tls.sendall(f"GET /?slow={i} HTTP/1.1\r\nHost: {sandbox.domain}\r\n".encode())
            slow[tls] = "header"
        body_tls = open_tls(sandbox)
        body_tls.sendall(
            f"POST /api/v1/posts HTTP/1.1\r\nHost: {sandbox.domain}\r\n"
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"user'.encode()
        )
        slow[body_tls] = "body"
        case.sent += len(slow)

        normal = new_browser(sandbox)
        started = time.monotonic()
        closed_after: dict[str, list[float]] = {"header": [], "body": []}
        slow_count, served_while_all_open = len(slow), 0
        while slow and time.monotonic() - started < 40:
            for tls, kind in list(slow.items()):
                tls.settimeout(0.1)
                try:
                    answer = tls.recv(65536)
                except TimeoutError:  # still open: trickle one more byte of the header
                    if kind == "header":
                        tls.sendall(b"X")  # never a whole header line, never the blank line
                    continue
                except OSError:
                    answer = b""
                assert not answer or answer.startswith(b"HTTP/1.1 4"), answer[:200]
                case.answers[answer[9:12].decode() if answer else "closed"] += 1
                closed_after[slow.pop(tls)].append(round(time.monotonic() - started, 1))
                tls.close()
            check_answer(case, normal.get(sandbox.url + "/", timeout=5), {200})
            served_while_all_open += len(slow) == slow_count
            time.sleep(0.5)
        for tls in slow:
            tls.close()
        print(
            f"closed after (s): {closed_after}; "
            f"normal requests answered while all were open: {served_while_all_open}"
        )
        assert served_while_all_open >= 3, served_while_all_open
        assert not slow, f"{len(slow)} slow connections still open after 40 s"


def test_wrong_host_names_get_no_content(sandbox, ledger):
    with ledger.case("invalid Host / SNI") as case:
        for host in ("unknown.example", sandbox.edge["ip"], "localhost"):
            closed_without_answer(sandbox, case, request_bytes("/", host=host, sandbox=sandbox))
        # Absolute form: the name in the request target wins over Host (RFC 9112 §3.2.2).
        absolute = request_bytes("https://evil.example/", sandbox=sandbox)
        closed_without_answer(sandbox, case, absolute)
        one_answer(sandbox, case, request_bytes("/", host=None, sandbox=sandbox), {400})
        two_hosts = request_bytes("/", ["Host: evil.example"], sandbox=sandbox)
        one_answer(sandbox, case, two_hosts, {400})
        # No SNI at all (a client that connects by IP address): the handshake fails.
        context = tls_context(sandbox)
        context.check_hostname = False
        raw = socket.create_connection((sandbox.edge["ip"], 443), timeout=ANSWER_TIMEOUT)
        with raw, pytest.raises(ssl.SSLError):
            context.wrap_socket(raw)
        case.count("handshake refused")
        # Forwarding headers from a client are not believed: redirects stay on the site.
        spoofed = request_bytes(
            "/posts/new",
            [
                "X-Forwarded-Host: evil.example",
                "Forwarded: host=evil.example;proto=http",
                "X-Forwarded-Proto: http",
                "X-Original-URL: /admin",
                "X-Rewrite-URL: /admin",
            ],
            sandbox=sandbox,
        )
        redirect = one_answer(sandbox, case, spoofed, {302})
        assert redirect.header("Location").startswith("/login"), redirect.headers


TRAVERSALS = [
    b"/static/../../etc/passwd",
    b"/static/..%2f..%2f..%2fetc%2fpasswd",
    b"/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc/passwd",
    b"/static/.%2e/.%2e/.%2e/etc/passwd",
    b"/static/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    b"/static/..\\..\\..\\etc\\passwd",
    b"/static/..%5c..%5c..%5cetc%5cpasswd",
    b"/static/css%00.css",
    b"/static/..%00/etc/passwd",
    b"/static/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    b"/static/..%c0%af..%c0%afetc%c0%afpasswd",
    b"/static/..%c1%9c..%c1%9cetc%c1%9cpasswd",
    b"/static/%u002e%u002e/etc/passwd",
    b"/static/....//....//etc/passwd",
    b"/static/dist/..;/..;/etc/passwd",
    b"/static//etc/passwd",
    b"/static../etc/passwd",
    b"/static/../__init__.py",
    b"/static/..%2f__init__.py",
    b"/static/..%2f..%2f.env",
    b"/static/",
    b"/static/.git/config",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/u/..%2f..%2fetc%2fpasswd",
    b"/.env",
    b"/.git/config",
]


def test_path_traversal_never_leaves_the_static_root(sandbox, ledger):
    with ledger.case("path traversal") as case:
        for path in TRAVERSALS:
            answer = one_answer(
                sandbox, case, request_bytes(path, sandbox=sandbox), {400, 403, 404}
            )
            # /etc/passwd, Python source, the app's .env, git metadata:
            outside = re.search(
                rb"root:x:0:|^import |^from |SECRET_KEY=|\[core\]", answer.body, re.MULTILINE
            )
            assert outside is None, (path, answer.body[:300])


def test_request_smuggling_is_refused_or_harmless(sandbox, ledger):
    """A request hidden in another's body never runs as a request of its own.

    nginx reads the whole body and sends it on with a Content-Length of its own, so gunicorn
    cannot frame it differently; ambiguous framing is refused and the connection closed.
    """
    marker = "smuggled-" + secrets.token_hex(6)
    smuggled = f"GET /{marker} HTTP/1.1\r\nHost: {sandbox.domain}\r\n\r\n".encode()
    after_empty_chunk = b"0\r\n\r\n" + smuggled

    def post(headers: list[str], body: bytes) -> bytes:
        head = [b"POST / HTTP/1.1", f"Host: {sandbox.domain}".encode(), *map(str.encode, headers)]
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    # RFC 9112 §6.1: a transfer coding the server does not implement gets 501.
    unknown_coding = {400, 501}
    ambiguous = [
        (["Content-Length: 5", "Transfer-Encoding: chunked"], {400}),
        (["Transfer-Encoding: chunked", f"Content-Length: {len(after_empty_chunk)}"], {400}),
        ([f"Content-Length: {len(after_empty_chunk)}", "Content-Length: 5"], {400}),
        (["Content-Length: 5", "Content-Length: 5"], {400}),
        (["Transfer-Encoding: chunked, identity"], unknown_coding),
        (["Transfer-Encoding: identity", "Content-Length: 5"], unknown_coding),
        (["Transfer-Encoding: xchunked"], unknown_coding),
        (["Transfer-Encoding:\tchunked"], unknown_coding),
        (["Transfer-Encoding : chunked"], {400}),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], {400}),
        (["X-Padding: a", " Transfer-Encoding: chunked"], {400}),  # obs-fold
        (["Content-Length: +5"], {400}),
        (["Content-Length: 0x5"], {400}),
        (["Content-Length: -1"], {400}),
    ]
    bad_chunks = [b"zz\r\nhello\r\n", b"f" * 20 + b"\r\nhello\r\n", b"-5\r\nhello\r\n"]
    with ledger.case("request smuggling") as case:
        # Kept alive: after its one answer nginx closes, so the GET behind never runs.
        for headers, allowed in ambiguous:
            responses = exchange(sandbox, post(headers, after_empty_chunk))
            assert len(responses) == 1, (headers, [r.status for r in responses])
            check_answer(case, responses[0], allowed)
        for chunk in bad_chunks:
            responses = exchange(sandbox, post(["Transfer-Encoding: chunked"], chunk + smuggled))
            assert len(responses) == 1, (chunk, [r.status for r in responses])
            check_answer(case, responses[0], {400, 413})
        # Framing nginx accepts (also the lenient chunk-size forms): the GET is body, the POST
        # gets its one 405 from the app.
        inside = [
            (["Content-Type: text/plain", f"Content-Length: {len(smuggled)}"], smuggled),
            (
                ["Transfer-Encoding: chunked"],
                f"{len(smuggled):x}\r\n".encode() + smuggled + b"\r\n0\r\n\r\n",
            ),
            (
                ["Transfer-Encoding: chunked"],
                f"{len(smuggled):x} ext\r\n".encode() + smuggled + b"\r\n0\r\n\r\n",
            ),
            (
                ["Transfer-Encoding: chunked"],
                f"{len(smuggled):x}\n".encode() + smuggled + b"\n0\n\n",
            ),
        ]
        for headers, body in inside:
            responses = exchange(sandbox, post([*headers, "Connection: close"], body))
            assert [r.status for r in responses] == [405], [r.status for r in responses]
            check_answer(case, responses[0], {405})
        # Neither nginx nor gunicorn ever saw the smuggled request line. nginx's access log is
        # buffered (flushed every second): wait until a request sent after all of these is in
        # it, so a smuggled line would be there too.
        flushed = "flushed-" + secrets.token_hex(6)
        sandbox.curl("-o", "/dev/null", f"https://{sandbox.domain}/?{flushed}")
        sandbox.nginx_log_lines(flushed)
        count_in_logs = (
            f"sudo grep -c -- '{marker}' /var/log/nginx/access.log;"
            f" sudo journalctl -u flaskstack-web --since -10min --no-pager | grep -c -- '{marker}'"
        )
        logged = sandbox.ssh(sandbox.edge, count_in_logs, check=False).stdout.split()
        assert logged == ["0", "0"], f"the smuggled request was logged: {logged}"


def test_h2_requests_over_the_limits_are_refused(sandbox, ledger):
    """curl --http2: a header too large for nginx's buffers ends the connection (GOAWAY)."""

    def h2(*args: str) -> str:
        result = sandbox.curl(
            "--http2", "-o", "/dev/null", "-w", "%{http_version} %{response_code}", *args
        )
        return result.stdout if result.returncode == 0 else f"curl exit {result.returncode}"

    site = f"https://{sandbox.domain}"
    with ledger.case("HTTP/2 specific") as case:
        for args, allowed in [
            (["-H", "X-Big: " + "a" * 20_000, f"{site}/"], {"curl exit 18", "2 400", "2 431"}),
            (["-H", "Cookie: a=" + "c" * 20_000, f"{site}/"], {"curl exit 18", "2 400", "2 431"}),
            (
                [*(arg for i in range(300) for arg in ("-H", f"X-H{i}: {'h' * 100}")), f"{site}/"],
                {"curl exit 18", "2 400", "2 431"},
            ),
            (["-H", "Host: evil.example", f"{site}/"], {"curl exit 92", "curl exit 16"}),
            (["--path-as-is", f"{site}/static/../../etc/passwd"], {"2 400"}),
            # Connection-specific in HTTP/2: refused, or dropped and the POST answered 405.
            (["-H", "Transfer-Encoding: chunked", "-d", "x=1", f"{site}/"], {"2 400", "2 405"}),
            (["-H", "Content-Length: 0", "-d", "x=1", f"{site}/"], {"2 400"}),
            (["-H", "Content-Length: 2", "-d", "x=1234567", f"{site}/"], {"2 400"}),
            (["-X", "TRACE", f"{site}/"], {"2 405"}),
            (["-X", "PROPFIND", f"{site}/"], {"2 405"}),
        ]:
            outcome = h2(*args)
            case.count(outcome.removeprefix("2 "))
            assert outcome in allowed, (args[:2], outcome)
            assert not outcome.startswith("2 5"), outcome


def test_forged_session_cookies_are_anonymous_and_never_adopted(sandbox, ledger, users):
    forged = [
        b"deadbeef",
        secrets.token_urlsafe(32).encode(),
        b"A" * 4000,
        "Ünïcödé☃".encode(),
        b"\xff\xfe\xfd",
        b'"a=b; c=d"',
        b"a=b=c",
        b"*",
        b"../../../etc/passwd",
        b"%00",
        b"eyJfZnJlc2giOmZhbHNlfQ.ZZZ.abc",  # a Flask signed-cookie session
    ]
    with ledger.case("forged session cookies") as case:
        for value in forged:
            for cookie in (
                b"__Host-session=" + value,
                b"__Host-session=" + value + b"; __Host-session=other",
            ):
                page = one_answer(
                    sandbox,
                    case,
                    request_bytes("/", [b"Cookie: " + cookie], sandbox=sandbox),
                    {200},
                )
                assert b"Log out" not in page.body and page.header("Set-Cookie") is None
            answer = one_answer(
                sandbox,
                case,
                request_bytes("/posts/new", [b"Cookie: __Host-session=" + value], sandbox=sandbox),
                {302},
            )
            assert answer.header("Location").startswith("/login")
            issued = answer.header("Set-Cookie") or ""
            assert not issued.startswith(f"{SESSION_COOKIE}={value.decode('latin-1')};"), issued
        one_answer(
            sandbox,
            case,
            request_bytes("/", [b"Cookie: __Host-session=\x01\x02"], sandbox=sandbox),
            {200, 400},
        )

        # Session fixation: an id the attacker planted is replaced, and again at log-in.
        alice = users["alice"]
        browser = new_browser(sandbox)
        planted = secrets.token_urlsafe(32)
        browser.cookies.set(SESSION_COOKIE, planted, domain=sandbox.domain, path="/")
        form = browser.get(f"{sandbox.url}/login", timeout=ANSWER_TIMEOUT)
        check_answer(case, form, {200})
        before_login = browser.cookies.get(SESSION_COOKIE)
        assert before_login != planted
        logged_in = auth_post(
            lambda: browser.post(
                f"{sandbox.url}/login",
                headers={"Referer": form.url},
                timeout=ANSWER_TIMEOUT,
                data={
                    "csrf_token": csrf_token(form.text),
                    "username": alice["name"],
                    "password": alice["password"],
                },
            )
        )
        check_answer(case, logged_in, {200})
        assert "Log out" in logged_in.text
        assert browser.cookies.get(SESSION_COOKIE) not in (planted, before_login, None)


def test_invalid_utf8_and_control_characters_get_a_4xx_or_are_ignored(sandbox, ledger, users):
    alice = users["alice"]
    with ledger.case("invalid UTF-8, control characters") as case:
        for target in [
            b"/u/%ff%fe",
            b"/u/%c3%28",
            b"/u/%ed%a0%80",
            b"/posts/%ff",
            b"/u/\xff\xfe",
            b"/u/a%01b",
            b"/u/a%7fb",
            b"/?before=%ff",
            b"/?before=%00",
            b"/api/v1/posts?limit=%ff%fe&before=%00",
            b"/?q=\x7f\x01",
        ]:
            one_answer(sandbox, case, request_bytes(target, sandbox=sandbox), {200, 400, 404})
        for header in [
            b"User-Agent: \xff\xfe\x80",
            b"User-Agent: \x01\x02\x7f",
            b"Referer: \xff\xfe",
            b"Referer: javascript:alert(1)",
            b"X-Request-ID: <script>\xff",
            b"Accept-Language: \xff;q=\x00",
            b"Authorization: Bearer \xff\xfe",
            b"Authorization: Bearer fst_" + b"a" * 5000,
            b"Content-Type: \xff/\xfe",
            b"If-None-Match: \xff",
        ]:
            answer = one_answer(
                sandbox, case, request_bytes("/api/v1/me", [header], sandbox=sandbox), {400, 401}
            )
            assert b"<script>" not in (answer.header("X-Request-ID") or "").encode()

        # Forms: raw bytes in the urlencoded body, with a valid CSRF token.
        browser = alice["browser"]
        form = f"{sandbox.url}/posts/new"
        token = csrf_token(browser.get(form, timeout=ANSWER_TIMEOUT).text).encode()
        for body in [
            b"title=%FF%FE&body=x",
            b"title=\xff\xfe&body=x",
            b"title=a%00b&body=x",
            b"title=ok&body=%C3%28",
            b"title=%ED%A0%80&body=x",
        ]:
            answer = browser.post(
                form,
                data=b"csrf_token=" + token + b"&" + body,
                timeout=ANSWER_TIMEOUT,
                headers={"Referer": form, "Content-Type": "application/x-www-form-urlencoded"},
            )
            check_answer(case, answer, {400})
        # JSON: bytes that are not UTF-8, NUL, lone surrogates, a body nested too deep.
        for body in [
            b'{"title": "\xff\xfe", "body": "x"}',
            b'{"title": "a\\u0000b", "body": "x"}',
            b'{"title": "\\ud800", "body": "x"}',
            b"[" * 50_000,
            b'{"title": ' + b"1" * 5000 + b', "body": "x"}',
            b'\xef\xbb\xbf{"title": 1}',
        ]:
            answer = browser.post(
                f"{sandbox.url}/api/v1/posts",
                data=body,
                timeout=ANSWER_TIMEOUT,
                headers={**alice["api"], "Content-Type": "application/json"},
            )
            check_answer(case, answer, {400})
            assert answer.json()["message"], answer.text


def test_injection_strings_are_refused_or_stored_literally_and_escaped(sandbox, ledger, users):
    alice, mallory = users["alice"], users["mallory"]
    site, browser = sandbox.url, alice["browser"]
    with ledger.case("SQL/HTML/template injection") as case:
        # Registration and log-in: all fields in one request each (the rate limit).
        register = auth_post(
            lambda: post_form(
                new_browser(sandbox),
                f"{site}/register",
                username="' OR 1=1--",
                email="<script>alert(1)</script>@x.org",
                password="{{7*7}}%s%n' OR '1'='1",
                confirm='"; DROP TABLE users;--',
            )
        )
        check_answer(case, register, {400})
        for username, password in [("' OR 1=1--", "' OR '1'='1"), (alice["name"] + "'--", "x")]:
            login = auth_post(
                lambda u=username, p=password: post_form(
                    new_browser(sandbox), f"{site}/login", username=u, password=p
                )
            )
            check_answer(case, login, {400})
            assert "Unknown username or wrong password." in login.text
        token = auth_post(
            lambda: new_browser(sandbox).post(
                f"{site}/api/v1/tokens",
                timeout=ANSWER_TIMEOUT,
                json={"username": alice["name"] + "' OR 1=1--", "password": "' OR '1'='1"},
            )
        )
        check_answer(case, token, {401})

        # Posts and comments, by form and by API: stored as typed, shown escaped.
        for text in INJECTIONS:
            created = post_form(browser, f"{site}/posts/new", title=text, body=text + " body")
            check_answer(case, created, {200})
            # Shown as typed: markup escaped, never rendered, templates never evaluated.
            assert escape(text) in created.text, text
            assert text == escape(text) or text not in created.text, text
            commented = post_form(
                browser,
                created.url.split("#")[0] + "/comments",
                form_url=created.url.split("#")[0],
                body=text,
            )
            check_answer(case, commented, {200})
            assert escape(text) in commented.text
            api_post = browser.post(
                f"{site}/api/v1/posts",
                headers=alice["api"],
                json={"title": text, "body": text},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, api_post, {201})
            assert api_post.json()["title"] == text
            api_comment = browser.post(
                f"{site}/api/v1/posts/{api_post.json()['id']}/comments",
                headers=alice["api"],
                json={"body": text},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, api_comment, {201})
            assert api_comment.json()["body"] == text
        page = browser.get(f"{site}/", timeout=ANSWER_TIMEOUT)
        check_answer(case, page, {200})
        for markup in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>"):
            assert markup not in page.text and escape(markup) in page.text, markup

        # Numbers that carry SQL: in cursors, page sizes and path ids.
        baseline = browser.get(f"{site}/api/v1/posts", timeout=ANSWER_TIMEOUT).json()["posts"]
        for value in SQL_IN_NUMBERS:
            for param in ("before", "limit"):
                listed = browser.get(
                    f"{site}/api/v1/posts", params={param: value}, timeout=ANSWER_TIMEOUT
                )
                check_answer(case, listed, {200})
                # An invalid cursor is ignored: never more rows than a plain first page.
                assert len(listed.json()["posts"]) <= len(baseline), (param, value)
            comments = browser.get(
                f"{site}/api/v1/posts/{alice['post']['id']}/comments",
                params={"after": value, "limit": value},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, comments, {200})
            for path in (
                f"/posts/{value}",
                f"/api/v1/posts/{value}",
                f"/u/{value}",
                f"/api/v1/comments/{value}",
            ):
                check_answer(case, browser.get(site + path, timeout=ANSWER_TIMEOUT), {404})
        for value in ("99999999999999999999", "0", "2147483648"):
            for path in (f"/posts/{value}", f"/api/v1/posts/{value}", f"/api/v1/comments/{value}"):
                check_answer(case, browser.get(site + path, timeout=ANSWER_TIMEOUT), {404})
            huge = browser.get(
                f"{site}/api/v1/posts",
                params={"before": value, "limit": value},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, huge, {200})
            assert len(huge.json()["posts"]) <= 100

        # Nothing was dropped or rewritten: both users' first posts read as created.
        for user in (alice, mallory):
            again = browser.get(f"{site}/api/v1/posts/{user['post']['id']}", timeout=ANSWER_TIMEOUT)
            check_answer(case, again, {200})
            assert again.json() == user["post"]
        me = browser.get(f"{site}/api/v1/me", headers=mallory["api"], timeout=ANSWER_TIMEOUT)
        check_answer(case, me, {200})
        assert me.json()["username"] == mallory["name"]


def test_another_users_post_and_comment_cannot_be_changed(sandbox, ledger, users):
    alice, mallory = users["alice"], users["mallory"]
    site, attacker = sandbox.url, mallory["browser"]
    post_url = f"{site}/posts/{alice['post']['id']}"
    with ledger.case("other users' data") as case:
        comment = alice["browser"].post(
            f"{site}/api/v1/posts/{alice['post']['id']}/comments",
            headers=alice["api"],
            json={"body": "Alice's comment."},
            timeout=ANSWER_TIMEOUT,
        )
        check_answer(case, comment, {201})
        check_answer(case, attacker.get(f"{post_url}/edit", timeout=ANSWER_TIMEOUT), {403})
        token = csrf_token(attacker.get(post_url, timeout=ANSWER_TIMEOUT).text)
        for url, data in [
            (f"{post_url}/edit", {"title": "Owned", "body": "Owned."}),
            (f"{post_url}/delete", {}),
            (f"{site}/comments/{comment.json()['id']}/delete", {}),
        ]:
            answer = attacker.post(
                url,
                data={"csrf_token": token, **data},
                headers={"Referer": post_url},
                timeout=ANSWER_TIMEOUT,
            )
            check_answer(case, answer, {403})
            # Without the CSRF token: refused before the permission check.
            check_answer(
                case,
                attacker.post(
                    url, data=data, headers={"Referer": post_url}, timeout=ANSWER_TIMEOUT
                ),
                {400},
            )
        unchanged = attacker.get(
            f"{site}/api/v1/posts/{alice['post']['id']}", timeout=ANSWER_TIMEOUT
        )
        check_answer(case, unchanged, {200})
        assert unchanged.json() == alice["post"]
        still = attacker.get(
            f"{site}/api/v1/comments/{comment.json()['id']}", timeout=ANSWER_TIMEOUT
        )
        check_answer(case, still, {200})
        assert still.json()["body"] == "Alice's comment."


def test_unusual_methods_get_405_or_400(sandbox, ledger):
    with ledger.case("unusual methods") as case:
        for method, target in [
            ("TRACE", "/"),
            ("TRACK", "/"),
            ("CONNECT", f"{sandbox.domain}:443"),
            ("PROPFIND", "/"),
            ("DELETE", "/"),
            ("PUT", "/posts/new"),
            ("PATCH", "/api/v1/posts"),
            ("DELETE", "/api/v1/posts/1"),
            ("TRACE", "/api/v1/posts"),
            ("FOO", "/"),
            ("get", "/"),
            ("G@T", "/"),
            ("A" * 40, "/"),
            ("DELETE", "/static/no-such.css"),
        ]:
            payload = request_bytes(target, ["Content-Length: 0"], method=method, sandbox=sandbox)
            answer = one_answer(sandbox, case, payload, {400, 404, 405})
            if target.startswith("/api/") and answer.status == 405 and method != "TRACE":
                assert json.loads(answer.body)["message"], answer.body


def test_the_site_is_still_up_after_the_corpus(sandbox, ledger):
    with ledger.case("site still up") as case:
        browser = new_browser(sandbox)
        for path in ("/", "/readyz", "/api/v1/posts"):
            check_answer(case, browser.get(sandbox.url + path, timeout=ANSWER_TIMEOUT), {200})
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', browser.get(sandbox.url + "/").text)
        check_answer(case, browser.get(sandbox.url + stylesheet.group(1), timeout=15), {200})
        # No request of the corpus made the app log an unhandled error.
        errors = sandbox.ssh(
            sandbox.edge,
            f"sudo journalctl -u flaskstack-web --since @{ledger.started_at} --no-pager"
            " | grep -c 'unhandled error'",
            check=False,
        ).stdout.strip()
        assert errors == "0", f"{errors} unhandled errors in the app's log"
    print()
    print(ledger.table())
    assert all(c.verdict == "ok" for c in ledger.cases), "a case above failed"
