"""Hostile input, the edge's limits: request lines, headers, cookies and bodies too large, and
clients too slow (slowloris). Each gets a clear 4xx or is cut off, while others are served."""

from __future__ import annotations

import json
import secrets
import ssl
import time

from support.forms import csrf_token
from support.ledger import check_answer, one_answer
from support.raw_http import ANSWER_TIMEOUT, open_tls, request_bytes


def test_oversized_request_lines_headers_and_cookies_get_a_4xx(sandbox, ledger):
    with ledger.case("oversized URI/headers/cookie") as case:
        too_long = {400, 414, 431, 494}
        one_answer(sandbox, case, request_bytes("/" + "a" * 9000, sandbox=sandbox), too_long)
        # Under nginx's 8k buffer but over gunicorn's request line limit (4094).
        one_answer(sandbox, case, request_bytes("/?q=" + "a" * 6000, sandbox=sandbox), too_long)
        big = ["X-Big: " + "b" * 10_000]
        one_answer(sandbox, case, request_bytes("/", big, sandbox=sandbox), too_long)
        # Within nginx's buffers but over gunicorn's 100 fields: a path no copy in nginx's
        # microcache answers, so that the request reaches the app (a cached page is served
        # whatever headers come with it).
        many = [f"X-Header-{i}: {'h' * 90}" for i in range(200)]
        uncached = f"/?fresh={secrets.token_hex(8)}"
        one_answer(sandbox, case, request_bytes(uncached, many, sandbox=sandbox), too_long)
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


def test_slow_clients_are_cut_off_while_others_are_served(sandbox, ledger, new_browser):
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

        normal = new_browser()
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
