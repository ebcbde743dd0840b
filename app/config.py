"""Settings from the environment, checked before the app starts.

Everything the app needs comes from environment variables (documented in `.env-template`);
`load_settings()` turns them into a flat dict for `app.config` and refuses unsafe production
settings with a one-line `ConfigError` that names the variable.

The defaults live here and nowhere else: an unset or empty variable means the value below.
`.env-template`, Compose and the Ansible role pass on only what the operator set or what the
deployment derives (tests/unit/test_settings_complete.py keeps the four in step).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from app.redis_connection import limits_storage_options, parse_sentinel_url

ENVIRONMENTS = ("production", "development", "testing")

# Values people copy from examples; none of them may guard a production deployment.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "secret",
        "password",
        "dev",
        "development",
        "postgres",
        "redis",
        "flaskstack",
        "example",
        "xxx",
        "test",
    }
)
MIN_SECRET_KEY_LENGTH = 32

# Postgres guard rails: a runaway query is cancelled instead of tying up a worker.
STATEMENT_TIMEOUT_MS = 5000
# libpq's smallest; with several hosts it applies to each, so a dead one first costs this much.
DB_CONNECT_TIMEOUT_S = 2
# A server that vanished (its host powered off: no reset ever comes) is given up on after this
# long without an acknowledgement or a keepalive answer, instead of holding the worker until
# gunicorn kills it; the request then finds the new primary (app/primary_change.py).
DB_DEAD_PEER_TIMEOUT_MS = 6000
# How long a request waits for a read-write Postgres server while the primary changes before it
# answers 503 (app/primary_change.py): a switchover leaves no primary for a few seconds, and the
# wait plus one more attempt must end inside gunicorn's timeout (test_timeouts_in_order.py).
PRIMARY_CHANGE_WAIT_S = 15.0
# Redis guard rails: a dead or unreachable Redis must fail fast, not hang a request.
REDIS_SOCKET_TIMEOUT_S = 2.0
# Through Sentinels, how long a Redis command may wait for a failover to end before the request
# gets its 503 (app/redis_connection.py).
REDIS_FAILOVER_WAIT_S = 5.0


# The bind key of the engine that GET and HEAD requests use (app/extensions.py).
READ_ONLY_BIND = "read_only"


class ConfigError(SystemExit):
    """Unsafe or missing setting: the process exits with this one-line message (status 1)."""


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _url_password(url: str) -> str:
    """The password part of a URL, also in the `unix://:pass@/path` and `?password=` forms."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if key == "password":
            return unquote(value)
    return ""


def sqlalchemy_url(database_url: str) -> str:
    """Pin the psycopg2 driver: SQLAlchemy 2.1 maps plain `postgresql://` to psycopg 3.

    libpq's URL for several servers (`postgresql://user:pw@h1:5432,h2:5432/db?…`, which psql,
    pg_dump and other clients read too) is beyond SQLAlchemy's URL parser: its hosts move to
    libpq's query form, `postgresql+psycopg2://user:pw@/db?host=h1,h2&port=5432,5432&…`, which
    SQLAlchemy hands to psycopg2 as the same `host` and `port` lists. (Its other query form,
    `host=h1:5432&host=h2:5432`, splits at every colon and so cannot carry IPv6 addresses.)
    """
    for scheme in ("postgresql://", "postgres://"):
        if database_url.startswith(scheme):
            database_url = "postgresql+psycopg2://" + database_url[len(scheme) :]
            break
    return _hosts_in_query(database_url)


def _hosts_in_query(url: str) -> str:
    """A multi-host URL with its hosts and ports moved into the query; any other unchanged."""
    scheme, separator, rest = url.partition("://")
    netloc_end = min((i for i in map(rest.find, "/?") if i >= 0), default=len(rest))
    userinfo, at, hostlist = rest[:netloc_end].rpartition("@")
    if not separator or "," not in hostlist:
        return url
    hosts, ports = [], []
    for entry in hostlist.split(","):
        if entry.startswith("["):  # an IPv6 address: [2001:db8::1]:5432
            host, _, port = entry[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = entry.partition(":")
        hosts.append(host)
        ports.append(port)
    path, _, query = rest[netloc_end:].partition("?")
    location = [f"host={','.join(hosts)}", *([f"port={','.join(ports)}"] if any(ports) else [])]
    query = "&".join([*location, *([query] if query else [])])
    return f"{scheme}://{userinfo}{at}{path or '/'}?{query}"


def engine_options(read_only: bool) -> dict:
    """SQLAlchemy engine options for the read-write engine or the read-only one.

    The read-write engine (POST and the other unsafe methods, CLI, worker) runs transactions
    and checks each pooled connection with a round trip before use (pre-ping): writes are rare
    and must not fail on a connection that a Postgres restart left dead.

    The read-only engine serves GET and HEAD requests, most of the traffic, without a round
    trip that does no work: its connections are in autocommit (no BEGIN, no ROLLBACK at the
    end of the request) and read-only in Postgres itself (a write in a GET view fails loudly
    instead of committing half of something; set once each connection is made, in
    app/extensions.py, since libpq's target_session_attrs=read-write refuses a session that
    starts read-only), and a dead pooled connection is detected without pre-ping, by a look at
    its socket (app/extensions.py) and, failing that, by running the view again (`FlaskStack`
    in app/__init__.py).
    """
    return {
        "pool_pre_ping": not read_only,
        "pool_size": 5,
        "max_overflow": 5,
        "pool_timeout": 5,  # a saturated pool answers 503 instead of queueing forever
        "pool_recycle": 1800,
        **({"isolation_level": "AUTOCOMMIT"} if read_only else {}),
        "connect_args": {
            "connect_timeout": DB_CONNECT_TIMEOUT_S,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": DB_DEAD_PEER_TIMEOUT_MS,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "application_name": "flaskstack-ro" if read_only else "flaskstack",
        },
    }


def limiter_storage_uri(redis_url: str) -> str:
    """The `limits` library spells Redis unix sockets `redis+unix://`; a Sentinel URL goes
    without its credentials, which `limiter_storage_options` passes decoded."""
    sentinel = parse_sentinel_url(redis_url)
    if sentinel is not None:
        return sentinel.limits_uri()
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://") :]
    return redis_url


def limiter_storage_options(redis_url: str) -> dict:
    """RATELIMIT_STORAGE_OPTIONS: the app's own Redis timeouts, and through Sentinels its
    credentials and failover handling."""
    return limits_storage_options(redis_url, REDIS_SOCKET_TIMEOUT_S, REDIS_FAILOVER_WAIT_S)


def _check_redis_url(redis_url: str) -> None:
    try:
        parse_sentinel_url(redis_url)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL: {exc}") from None


def log_level(env: Mapping[str, str]) -> str:
    """LOG_LEVEL, for the app's logging and gunicorn's (deploy/gunicorn.conf.py) alike."""
    return (env.get("LOG_LEVEL") or "INFO").strip().upper()


def default_mail_from(site_url: str) -> str:
    """A sender at the site's own name, so mail relays and SPF see the domain they expect;
    localhost when the site is an address (development's 127.0.0.1)."""
    host = urlsplit(site_url).hostname or "localhost"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"flaskstack <noreply@{host}>"
    return "flaskstack <noreply@localhost>"


def _check_production(env: Mapping[str, str]) -> None:
    secret_key = env.get("SECRET_KEY", "")
    if secret_key.lower() in KNOWN_DEFAULT_SECRETS or len(secret_key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"SECRET_KEY must be a random value of at least {MIN_SECRET_KEY_LENGTH} characters "
            "in production (python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    database_url = env.get("DATABASE_URL", "")
    if not database_url:
        raise ConfigError("DATABASE_URL must be set in production")
    if _url_password(database_url).lower() in KNOWN_DEFAULT_SECRETS:
        raise ConfigError("DATABASE_URL must carry a non-default password in production")
    redis_url = env.get("REDIS_URL", "")
    if not redis_url:
        raise ConfigError("REDIS_URL must be set in production")
    if _url_password(redis_url).lower() in KNOWN_DEFAULT_SECRETS:
        raise ConfigError("REDIS_URL must carry a non-default password in production")


def load_settings(env: Mapping[str, str] | None = None) -> dict:
    """Build the Flask config from an environment mapping (os.environ by default)."""
    env = os.environ if env is None else env
    app_env = env.get("APP_ENV", "production").strip() or "production"
    if app_env not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, got {app_env!r}")
    production = app_env == "production"
    if production:
        _check_production(env)

    database_url = env.get("DATABASE_URL") or "postgresql://flaskstack@127.0.0.1:5432/flaskstack"
    redis_url = env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    _check_redis_url(redis_url)
    session_lifetime = _int(env, "SESSION_LIFETIME", 14 * 24 * 3600, minimum=60)
    site_url = (env.get("SITE_URL") or "http://127.0.0.1:8000").rstrip("/")

    return {
        "APP_ENV": app_env,
        "TESTING": app_env == "testing",
        # Errors always go through the error handlers (503 for outages), tests included.
        "PROPAGATE_EXCEPTIONS": False,
        "SECRET_KEY": env.get("SECRET_KEY") or "insecure-development-key-" + app_env,
        "SITE_URL": site_url,
        "LOG_LEVEL": log_level(env),
        "APP_HOST_HEADER": _bool(env.get("APP_HOST_HEADER")),
        # Request size: forms and JSON are small; anything larger is refused with 413.
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "MAX_FORM_MEMORY_SIZE": 256 * 1024,
        # Database: see engine_options() and app/extensions.py's read-only engine.
        "SQLALCHEMY_DATABASE_URI": sqlalchemy_url(database_url),
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(read_only=False),
        "SQLALCHEMY_BINDS": {
            READ_ONLY_BIND: {
                "url": sqlalchemy_url(database_url),
                **engine_options(read_only=True),
            }
        },
        # Redis, server-side sessions
        "REDIS_URL": redis_url,
        "SESSION_KEY_PREFIX": "flaskstack:session:",
        "SESSION_PERMANENT": True,
        "PERMANENT_SESSION_LIFETIME": timedelta(seconds=session_lifetime),
        # Absolute lifetime from login: no Redis write on every page view.
        "SESSION_REFRESH_EACH_REQUEST": False,
        # `__Host-` pins the cookie to this exact host over HTTPS with Path=/ (no Domain).
        "SESSION_COOKIE_NAME": "__Host-session" if production else "session",
        "SESSION_COOKIE_SECURE": production,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_PATH": "/",
        # No remember-me cookie is issued; these keep it safe should one ever be.
        "REMEMBER_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "PREFERRED_URL_SCHEME": "https" if production else "http",
        # CSRF tokens live as long as the session that holds them.
        "WTF_CSRF_TIME_LIMIT": None,
        "WTF_CSRF_SSL_STRICT": production,
        # Rate limits, counted in Redis so every gunicorn worker and app host shares them.
        "RATELIMIT_STORAGE_URI": limiter_storage_uri(redis_url),
        "RATELIMIT_STORAGE_OPTIONS": limiter_storage_options(redis_url),
        "RATELIMIT_KEY_PREFIX": "flaskstack:limit",
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_ENABLED": _bool(env.get("RATELIMIT_ENABLED"), default=True),
        "LOGIN_RATE_LIMIT": env.get("LOGIN_RATE_LIMIT") or "10 per minute;50 per hour",
        # Mail
        "SMTP_HOST": env.get("SMTP_HOST") or "localhost",
        "SMTP_PORT": _int(env, "SMTP_PORT", 25),
        "SMTP_USERNAME": env.get("SMTP_USERNAME", ""),
        "SMTP_PASSWORD": env.get("SMTP_PASSWORD", ""),
        "SMTP_STARTTLS": _bool(env.get("SMTP_STARTTLS")),
        "MAIL_FROM": env.get("MAIL_FROM") or default_mail_from(site_url),
        # Pagination
        "PAGE_SIZE": _int(env, "PAGE_SIZE", 20),
        # Migrations (migrations/env.py, `flask upgrade-schema`), in seconds: how long one may
        # wait for a table lock while the live site holds it, and run one statement.
        "MIGRATION_LOCK_TIMEOUT": _int(env, "MIGRATION_LOCK_TIMEOUT", 5),
        "MIGRATION_STATEMENT_TIMEOUT": _int(env, "MIGRATION_STATEMENT_TIMEOUT", 600),
    }
