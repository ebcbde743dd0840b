"""The hostile-input corpus's table, and the checks every answer in it must pass.

Every case counts its requests and answers; the corpus's last test prints one table of them all.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter

import requests

from support.raw_http import Response, exchange

# What an error may never show: stack traces, source paths, SQL errors, software versions.
LEAK_PATTERNS = re.compile(
    rb"Traceback \(most recent call last\)|File \"/|site-packages|/srv/flaskstack|/etc/nginx"
    rb"|psycopg|sqlalchemy|syntax error at or near|werkzeug|jinja2\.|nginx/\d|gunicorn/\d"
    rb"|Python/\d",
    re.IGNORECASE,
)


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
