"""How the app reaches Redis: one URL, REDIS_URL, names either a Redis server or Sentinels.

- `redis://…`, `rediss://…`, `unix://…`: one server, as redis-py reads the URL.
- `redis+sentinel://[user:password@]host:port[,host:port…]/service_name[?db=N]`: the Sentinels
  that watch the master of `service_name` (the form the `limits` library reads for rate
  limits). The user and password log in to the Sentinels and to the Redis servers alike.

Through Sentinels, a failover should cost a request a short wait, not an error. redis-py asks
the Sentinels for the master when it connects, and drops a connection on a READONLY reply (a
demoted master). That leaves two gaps, which `FailoverAwareConnection` closes:

- A master that Sentinel replaced goes on answering as a master until Sentinel demotes it, some
  seconds later: reads there are stale (a session created on the new master is missing, which
  logs its user out), and its writes are refused with NOREPLICAS (`min-replicas-to-write`: its
  replicas follow the new master) or, without that setting, accepted and lost.
- Those refusals are errors redis-py does not retry.

So a connection asks the Sentinels again when it is taken from the pool, at most once per
`MASTER_RECHECK_INTERVAL_S` per pool, and treats NOREPLICAS and UNBLOCKED (a blocking command
ended because its server turned replica) like READONLY: it disconnects and the command is
retried, on the master the Sentinels name by then, for up to the failover wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

log = logging.getLogger(__name__)

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
# How stale a pool's idea of the master may be after Sentinel switched it: one Sentinel round
# trip per pool and interval at most.
MASTER_RECHECK_INTERVAL_S = 1.0
# Replies of a server that is no longer the master, or is about to stop being one.
NOT_MASTER_REPLIES = ("NOREPLICAS", "UNBLOCKED")

T = TypeVar("T")


@dataclass(frozen=True)
class SentinelURL:
    sentinels: list[tuple[str, int]]
    service_name: str
    username: str | None
    password: str | None
    db: int

    def limits_uri(self) -> str:
        """The `limits` library's form, without the credentials (they go in its options)."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        return f"{SENTINEL_SCHEME}://{hosts}/{self.service_name}"


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """REDIS_URL's Sentinel form, parsed; None for any other URL. Raises ValueError with the
    reason when the URL is a Sentinel URL that cannot work."""
    scheme, _, rest = url.partition("://")
    if scheme != SENTINEL_SCHEME:
        if scheme.endswith("+sentinel"):
            raise ValueError(f"{scheme}:// is not supported; use {SENTINEL_SCHEME}://")
        return None
    # Split by hand: urllib refuses a bracketed IPv6 address among several hosts.
    rest, _, query_string = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = []
    for location in hosts.split(","):
        try:
            host = urlsplit(f"//{location.strip()}")
            port = host.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{location!r} is not host:port") from None
        if not host.hostname:
            raise ValueError(f"{location!r} is not host:port")
        sentinels.append((host.hostname, port))
    if len(sentinels) > 1 and any(":" in host for host, _ in sentinels):
        # limits (rate limits) fails to parse such a URL (urllib: "Invalid IPv6 URL").
        raise ValueError("name several Sentinels by host name or IPv4 address, not IPv6")
    service_name = unquote(path.strip("/"))
    if not service_name or "/" in service_name:
        raise ValueError(
            "the path must be the Sentinel service's name alone "
            f"({SENTINEL_SCHEME}://user:password@host:port,host:port/SERVICE?db=N)"
        )
    query = parse_qs(query_string)
    if set(query) - {"db"}:
        raise ValueError(f"only ?db=N may follow the service name, not {query_string!r}")
    try:
        db = int(query.get("db", ["0"])[-1])
    except ValueError:
        raise ValueError("db must be a number") from None
    username, has_password, password = userinfo.partition(":")
    return SentinelURL(
        sentinels=sentinels,
        service_name=service_name,
        username=unquote(username) or None,
        password=unquote(password) if has_password else None,
        db=db,
    )


# The deadline of the outermost retry running in this thread: a connection made while a command
# is retried retries too, and both share the one wait.
_retry_deadline = threading.local()


class RetryWithin(Retry):
    """redis-py's Retry, bounded by time instead of a count: as long as a failover may take."""

    def __init__(self, backoff, seconds: float) -> None:
        super().__init__(backoff, retries=-1)
        self.seconds = seconds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryWithin) and (
            super().__eq__(other) and self.seconds == other.seconds
        )

    __hash__ = Retry.__hash__

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable,
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        outer = getattr(_retry_deadline, "value", None)
        deadline = outer if outer is not None else time.monotonic() + self.seconds
        _retry_deadline.value = deadline
        try:
            failures = 0
            while True:
                try:
                    return do()
                except self._supported_errors as error:
                    if is_retryable and not is_retryable(error):
                        raise
                    failures += 1
                    if with_failure_count:
                        fail(error, failures)
                    else:
                        fail(error)
                    pause = self._backoff.compute(failures)
                    if time.monotonic() + pause >= deadline:
                        raise
                    time.sleep(pause)
        finally:
            if outer is None:
                _retry_deadline.value = None


class FailoverAwareConnection(SentinelManagedConnection):
    """A connection to the master the Sentinels name, following it when it moves (module
    docstring). Replica connections (`is_master` false) behave as redis-py's own."""

    def connect(self):
        if self._sock is not None and self.connection_pool.is_master and self._recheck_due():
            try:
                master = self.connection_pool.get_master_address()
            except redis.ConnectionError as exc:
                # Sentinels unreachable, or the master is down in their view: the command on
                # this connection finds out which, and its retry asks them again.
                log.debug("could not ask the Sentinels for the master: %s", exc)
            else:
                if master != (self.host, self.port):
                    log.info("the Redis master moved to %s:%s; reconnecting", *master)
                    self.disconnect()
        return super().connect()

    def send_packed_command(self, command, check_health=True):
        # redis-py reconnects a dropped connection here to the address it had, which skips the
        # Sentinel lookup of connect(): a retried command would go to the old master again.
        if self._sock is None:
            self.connect()
        return super().send_packed_command(command, check_health)

    def _recheck_due(self) -> bool:
        # One clock per pool, kept on redis-py's per-pool proxy that every connection shares.
        pool = self.connection_pool
        now = time.monotonic()
        if now - getattr(pool, "flaskstack_master_checked_at", 0.0) < MASTER_RECHECK_INTERVAL_S:
            return False
        pool.flaskstack_master_checked_at = now
        return True

    def read_response(self, *args, disconnect_on_error: bool = True, **kwargs):
        # A read that ends in an error (a timeout; an exception from a signal handler, as RQ's
        # warm shutdown interrupts its BLPOP) leaves the reply due on this connection: the next
        # command on it would wait behind it. redis-py's plain connection then drops itself, its
        # Sentinel connection does not by default: drop it here too.
        try:
            return super().read_response(*args, disconnect_on_error=disconnect_on_error, **kwargs)
        except redis.ResponseError as exc:
            if self.connection_pool.is_master and str(exc).startswith(NOT_MASTER_REPLIES):
                # Nothing was done: the command is retried on the master the Sentinels name.
                self.disconnect()
                raise redis.ConnectionError(f"the master is being replaced: {exc}") from exc
            raise


def _sentinel_options(sentinel: SentinelURL, socket_timeout: float) -> dict:
    """How to log in to the Sentinels. No retry: an unreachable one makes redis-py ask the next."""
    return {
        "username": sentinel.username,
        "password": sentinel.password,
        "socket_connect_timeout": socket_timeout,
        "socket_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
    }


def _master_options(sentinel: SentinelURL, socket_timeout: float, failover_wait: float) -> dict:
    return {
        "username": sentinel.username,
        "password": sentinel.password,
        "db": sentinel.db,
        "socket_connect_timeout": socket_timeout,
        "socket_timeout": socket_timeout,
        "connection_class": FailoverAwareConnection,
        "retry": RetryWithin(
            ExponentialWithJitterBackoff(base=0.05, cap=0.5), seconds=failover_wait
        ),
    }


def make_client(url: str, socket_timeout: float, failover_wait: float) -> redis.Redis:
    """A Redis client for `url` that fails fast: short timeouts, and a retry that covers a
    pooled connection that died when Redis restarted; anything longer than that is an outage
    and the request gets a 503 instead of waiting. Through Sentinels, the retry also waits up
    to `failover_wait` seconds for a failover to end (module docstring)."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
            health_check_interval=30,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.2), retries=1),
        )
    sentinels = Sentinel(
        sentinel.sentinels, sentinel_kwargs=_sentinel_options(sentinel, socket_timeout)
    )
    return sentinels.master_for(
        sentinel.service_name,
        health_check_interval=30,
        **_master_options(sentinel, socket_timeout, failover_wait),
    )


def limits_storage_options(url: str, socket_timeout: float, failover_wait: float) -> dict:
    """Flask-Limiter's storage options (RATELIMIT_STORAGE_OPTIONS) for `url`: the same
    connections as `make_client`'s. `limits` takes a Sentinel URL's credentials as they are
    written, still percent-encoded, so they go here decoded instead."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return {"socket_connect_timeout": socket_timeout, "socket_timeout": socket_timeout}
    return {
        **_master_options(sentinel, socket_timeout, failover_wait),
        "sentinel_kwargs": _sentinel_options(sentinel, socket_timeout),
        # Counts are read where they are written: a replica may lag behind, and fail over.
        "use_replicas": False,
    }
