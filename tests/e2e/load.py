"""A steady load of real HTTPS requests, for checking that an operation fails none of them."""

from __future__ import annotations

import threading
import time
from collections import Counter

import requests


class SteadyLoad:
    """Worker threads that request a URL over and over until stopped, counting outcomes.

    Every request opens a new connection (`Connection: close`), so a failure is the server's:
    no client retry on a reused keep-alive connection can hide it.
    """

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
