"""Steady loads of real HTTPS requests, for checking what an operation or a fault costs users.

Every request opens a new connection (`Connection: close`), so a failure is the server's: no
client retry on a reused keep-alive connection can hide it, and none can be blamed on a race
with the server closing an idle connection.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import requests


class SteadyLoad:
    """Worker threads that GET a URL over and over until stopped, counting outcomes."""

    def __init__(self, url: str, ca_cert: str, workers: int = 4) -> None:
        self.url = url
        self.ca_cert = ca_cert
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = requests.get(
                    self.url, verify=self.ca_cert, timeout=10, headers={"Connection": "close"}
                )
                outcome = str(response.status_code)
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with self._lock:
                self.outcomes[outcome] += 1

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        time.sleep(1)  # under way before the operation starts
        return self

    def __exit__(self, *exc_info) -> None:
        time.sleep(1)  # and still going after it ended
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failures(self) -> dict[str, int]:
        return {outcome: n for outcome, n in self.outcomes.items() if outcome != "200"}


@dataclass
class Request:
    """One request of a WriteLoad and how it ended."""

    kind: str  # "write" (create a comment), "read" (read it back) or "page" (a page)
    started: float  # seconds since the load began
    seconds: float  # until the answer (or the error)
    status: str  # HTTP status, or the exception's name when no answer came
    served_by: str = ""  # X-Served-By, when the app hosts say who they are
    comment_id: int | None = None  # for an acknowledged write
    body: str = ""  # for writes: what was written

    @property
    def ok(self) -> bool:
        # A form's write is answered 303 See Other (Post/Redirect/Get: the guestbook).
        return self.status.startswith("2") or (self.kind == "write" and self.status == "303")


class WriteLoad:
    """Threads that write comments through the API and read each one back, until stopped.

    Each thread loops: POST a comment with a unique body (a write is *acknowledged* when the
    API answers 201 with its id), then GET it back and check the body. With `web` (a session
    logged in through the site's forms) each loop also loads a page that reads the session from
    Redis. Every request and its outcome is recorded, so a test can tell which requests failed,
    when, and how fast.
    """

    def __init__(
        self,
        url: str,
        api: requests.Session,
        post_id: int,
        writers: int = 4,
        web: requests.Session | None = None,
        timeout: float = 10,
    ) -> None:
        self.url = url.rstrip("/")
        self.api = api
        self.web = web
        self.post_id = post_id
        self.timeout = timeout
        self.tag = secrets.token_hex(4)  # marks this load's comments
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(writers)
        ]
        self._began = time.monotonic()
        self.ended = 0.0

    def clock(self) -> float:
        return time.monotonic() - self._began

    @staticmethod
    def _client(template: requests.Session) -> requests.Session:
        client = requests.Session()
        client.trust_env = False  # REQUESTS_CA_BUNDLE/proxies of the machine must not apply
        client.verify = template.verify
        client.headers.update(template.headers)
        client.headers["Connection"] = "close"
        client.cookies.update(template.cookies)
        return client

    def _send(self, client: requests.Session, kind: str, method: str, url: str, **kwargs):
        started = self.clock()
        record = Request(kind=kind, started=started, seconds=0.0, status="")
        response = None
        try:
            response = client.request(method, url, timeout=self.timeout, **kwargs)
            record.status = str(response.status_code)
            record.served_by = response.headers.get("X-Served-By", "")
        except requests.RequestException as exc:
            record.status = type(exc).__name__
            time.sleep(0.1)  # a host that is down refuses at once: don't spin
        record.seconds = self.clock() - started
        return record, response

    def _run(self, writer: int) -> None:
        api = self._client(self.api)
        web = self._client(self.web) if self.web is not None else None
        seq = 0
        while not self._stop.is_set():
            seq += 1
            records = []
            body = f"load {self.tag} {writer}-{seq}"
            write, response = self._send(
                api, "write", "POST", f"{self.url}/api/v1/posts/{self.post_id}/comments",
                json={"body": body},
            )  # fmt: skip
            write.body = body
            records.append(write)
            if write.status == "201":
                write.comment_id = response.json()["id"]
                read, response = self._send(
                    api, "read", "GET", f"{self.url}/api/v1/comments/{write.comment_id}"
                )
                if read.ok and response.json().get("body") != body:
                    read.status = "wrong body"
                records.append(read)
            if web is not None:
                page, _ = self._send(web, "page", "GET", f"{self.url}/posts/{self.post_id}")
                records.append(page)
            with self._lock:
                self.requests.extend(records)

    def start(self) -> WriteLoad:
        self._began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.ended = self.clock()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 20)

    def __enter__(self) -> WriteLoad:
        self.start()
        time.sleep(2)  # under way before the operation starts
        return self

    def __exit__(self, *exc_info) -> None:
        time.sleep(2)  # and still going after it ended
        self.stop()

    # ---- what happened ----------------------------------------------------------------------

    @property
    def acknowledged(self) -> list[Request]:
        """The writes the site acknowledged (201 with the new comment's id)."""
        return [r for r in self.requests if r.kind == "write" and r.comment_id is not None]

    @property
    def failed(self) -> list[Request]:
        return [r for r in self.requests if not r.ok]

    def failures(self) -> Counter[str]:
        """Failed requests by kind and status, e.g. {"write 503": 3, "page ConnectionError": 1}."""
        return Counter(f"{r.kind} {r.status}" for r in self.failed)

    def slowest_failure(self) -> float:
        return max((r.seconds for r in self.failed), default=0.0)

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from `moment` until the first request started after it that succeeded."""
        starts = [r.started for r in self.requests if r.started >= moment and r.ok]
        return min(starts) - moment if starts else None

    def missing_from(self, stored: dict[int, str]) -> list[Request]:
        """Acknowledged writes that `stored` (comment id → body) lacks or holds altered."""
        return [w for w in self.acknowledged if stored.get(w.comment_id) != w.body]

    def summary(self) -> dict:
        return {
            "requests": len(self.requests),
            "failed": dict(sorted(self.failures().items())),
            "acknowledged": len(self.acknowledged),
        }

    def per_second(self) -> str:
        """A table: per second of the load, requests served by each host, and failures."""
        rows: dict[int, Counter[str]] = defaultdict(Counter)
        for request in self.requests:
            rows[int(request.started)][request.served_by if request.ok else "failed"] += 1
        hosts = sorted({r.served_by for r in self.requests if r.ok})
        columns = [*hosts, "failed"]
        lines = ["second " + " ".join(f"{h or 'ok':>8}" for h in columns)]
        for second in sorted(rows):
            lines.append(f"{second:6d} " + " ".join(f"{rows[second][h]:8d}" for h in columns))
        return "\n".join(lines)


class GuestbookLoad(WriteLoad):
    """The same load against examples/guestbook, the second app: each thread reads the book (a
    page with its form's CSRF token, tied to the thread's session cookie) and signs it with a
    unique message. A write is acknowledged when the site answers 303 (Post/Redirect/Get); the
    guestbook gives no id, so `body` is what a test looks for in Postgres."""

    CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

    def __init__(self, url: str, ca_cert: str, writers: int = 4, timeout: float = 10) -> None:
        client = requests.Session()
        client.verify = ca_cert
        super().__init__(url, api=client, post_id=0, writers=writers, timeout=timeout)

    def _run(self, writer: int) -> None:
        client = self._client(self.api)
        seq = 0
        while not self._stop.is_set():
            seq += 1
            page, response = self._send(client, "page", "GET", f"{self.url}/")
            records = [page]
            token = self.CSRF.search(response.text) if page.ok else None
            if token:
                body = f"load {self.tag} {writer}-{seq}"
                form = {"csrf_token": token.group(1), "name": f"load {writer}", "message": body}
                # Over HTTPS, Flask-WTF wants the form's page as the Referer, as a browser sends.
                write, _ = self._send(
                    client, "write", "POST", f"{self.url}/", data=form, allow_redirects=False,
                    headers={"Referer": f"{self.url}/"},
                )  # fmt: skip
                write.body = body
                if write.status == "303":
                    write.comment_id = seq  # acknowledged; the number is only this thread's
                records.append(write)
            with self._lock:
                self.requests.extend(records)
