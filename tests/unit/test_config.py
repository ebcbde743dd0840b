"""Settings from the environment, and refusing unsafe production settings."""

from __future__ import annotations

import pytest

from app.config import (
    READ_ONLY_BIND,
    ConfigError,
    limiter_storage_uri,
    load_settings,
    sqlalchemy_url,
)

GOOD_PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": "0123456789abcdef0123456789abcdef-real",
    "DATABASE_URL": "postgresql://flaskstack:s3cr3t-db-pass@db:5432/flaskstack",
    "REDIS_URL": "redis://:s3cr3t-redis-pass@cache:6379/0",
}


def test_production_settings_are_secure():
    settings = load_settings(GOOD_PRODUCTION)
    assert settings["SESSION_COOKIE_NAME"] == "__Host-session"
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["SESSION_COOKIE_HTTPONLY"] is True
    assert settings["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert settings["REMEMBER_COOKIE_SECURE"] is True
    assert settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg2://")
    options = settings["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options["pool_pre_ping"] is True
    assert "statement_timeout" in options["connect_args"]["options"]


def test_reads_get_an_autocommit_read_only_engine_on_the_same_database():
    settings = load_settings(GOOD_PRODUCTION)
    writer = settings["SQLALCHEMY_ENGINE_OPTIONS"]
    reader = settings["SQLALCHEMY_BINDS"][READ_ONLY_BIND]
    assert reader["url"] == settings["SQLALCHEMY_DATABASE_URI"]
    assert reader["isolation_level"] == "AUTOCOMMIT"
    assert "isolation_level" not in writer  # writes run in transactions
    assert reader["pool_pre_ping"] is False  # replaced by a socket check and one retry
    # Read-only once connected (app/extensions.py), which target_session_attrs=read-write allows.
    assert "read_only" not in reader["connect_args"]["options"]
    assert "read_only" not in writer["connect_args"]["options"]
    assert "statement_timeout" in reader["connect_args"]["options"]
    assert reader["pool_recycle"] == writer["pool_recycle"]


def test_the_default_environment_is_production():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings({})


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"SECRET_KEY": "changeme"}, "SECRET_KEY"),
        ({"SECRET_KEY": "too-short"}, "SECRET_KEY"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://flaskstack@db/flaskstack"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://flaskstack:postgres@db/flaskstack"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://flaskstack:change-me@db/flaskstack"}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache:6379/0"}, "REDIS_URL"),
        ({"REDIS_URL": "unix:///run/redis/redis.sock?db=0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:redis@cache:6379/0"}, "REDIS_URL"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"SESSION_LIFETIME": "soon"}, "SESSION_LIFETIME"),
        ({"SESSION_LIFETIME": "5"}, "SESSION_LIFETIME"),
    ],
)
def test_unsafe_or_invalid_settings_are_refused_in_one_line_naming_the_variable(changes, variable):
    with pytest.raises(ConfigError) as refused:
        load_settings({**GOOD_PRODUCTION, **changes})
    message = str(refused.value.code)
    assert message.startswith(variable)
    assert "\n" not in message


def test_a_redis_password_in_the_unix_socket_query_is_accepted():
    settings = load_settings(
        {**GOOD_PRODUCTION, "REDIS_URL": "unix:///run/redis/redis.sock?db=0&password=long-pass"}
    )
    assert settings["RATELIMIT_STORAGE_URI"].startswith("redis+unix:///run/redis/redis.sock")


def test_development_runs_without_secrets_and_without_https_cookies():
    settings = load_settings({"APP_ENV": "development"})
    assert settings["SESSION_COOKIE_NAME"] == "session"
    assert settings["SESSION_COOKIE_SECURE"] is False
    assert settings["SECRET_KEY"]
    assert settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg2://")


def test_numbers_and_flags_are_parsed():
    settings = load_settings(
        {
            "APP_ENV": "testing",
            "SESSION_LIFETIME": "3600",
            "SMTP_PORT": "587",
            "SMTP_STARTTLS": "true",
            "APP_HOST_HEADER": "yes",
            "RATELIMIT_ENABLED": "false",
        }
    )
    assert settings["PERMANENT_SESSION_LIFETIME"].total_seconds() == 3600
    assert settings["SMTP_PORT"] == 587
    assert settings["SMTP_STARTTLS"] is True
    assert settings["APP_HOST_HEADER"] is True
    assert settings["RATELIMIT_ENABLED"] is False


def test_an_empty_variable_means_the_default():
    """Compose passes `${NAME:-}` and .env-template leaves every value empty."""
    names = ("SESSION_LIFETIME", "SMTP_HOST", "SMTP_PORT", "SMTP_STARTTLS", "MAIL_FROM",
             "LOG_LEVEL", "SITE_URL", "APP_HOST_HEADER", "RATELIMIT_ENABLED", "LOGIN_RATE_LIMIT",
             "PAGE_SIZE", "MIGRATION_LOCK_TIMEOUT", "MIGRATION_STATEMENT_TIMEOUT")  # fmt: skip
    empty = load_settings({**GOOD_PRODUCTION, **dict.fromkeys(names, ""), "APP_ENV": ""})
    assert empty == load_settings(GOOD_PRODUCTION)


@pytest.mark.parametrize(
    ("site_url", "mail_from"),
    [
        ("https://blog.example.org", "flaskstack <noreply@blog.example.org>"),
        ("http://localhost:8000", "flaskstack <noreply@localhost>"),
        ("http://127.0.0.1:8000", "flaskstack <noreply@localhost>"),
        ("http://[::1]:8000", "flaskstack <noreply@localhost>"),
    ],
)
def test_the_default_sender_is_at_the_sites_own_name(site_url, mail_from):
    settings = load_settings({**GOOD_PRODUCTION, "SITE_URL": site_url})
    assert settings["MAIL_FROM"] == mail_from
    explicit = load_settings({**GOOD_PRODUCTION, "SITE_URL": site_url, "MAIL_FROM": "a <b@c.d>"})
    assert explicit["MAIL_FROM"] == "a <b@c.d>"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/d", "postgresql+psycopg2://u:p@h/d"),
        ("postgres://u:p@h/d", "postgresql+psycopg2://u:p@h/d"),
        ("postgresql+psycopg2://u:p@h/d", "postgresql+psycopg2://u:p@h/d"),
    ],
)
def test_the_psycopg2_driver_is_always_used(url, expected):
    assert sqlalchemy_url(url) == expected


# A Patroni cluster's DATABASE_URL as roles/app writes it: libpq's own multi-host syntax.
CLUSTER_URL = (
    "postgresql://flaskstack:s3cr%2Ft@10.0.0.21:5432,10.0.0.22:5432,10.0.0.23:5432/flaskstack"
    "?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=/etc/peers.crt"
)


def psycopg2_connect_arguments(url: str) -> tuple[list, dict]:
    """What SQLAlchemy's psycopg2 dialect passes to psycopg2.connect for `url`."""
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
    from sqlalchemy.engine import make_url

    return PGDialect_psycopg2().create_connect_args(make_url(url))


def test_a_url_naming_several_servers_reaches_psycopg2_with_all_of_them():
    url = sqlalchemy_url(CLUSTER_URL)
    assert url == (
        "postgresql+psycopg2://flaskstack:s3cr%2Ft@/flaskstack"
        "?host=10.0.0.21,10.0.0.22,10.0.0.23&port=5432,5432,5432"
        "&target_session_attrs=read-write&sslmode=verify-full&sslrootcert=/etc/peers.crt"
    )
    assert psycopg2_connect_arguments(url) == (
        [],
        {
            "user": "flaskstack",
            "password": "s3cr/t",
            "dbname": "flaskstack",
            "host": "10.0.0.21,10.0.0.22,10.0.0.23",
            "port": "5432,5432,5432",
            "target_session_attrs": "read-write",
            "sslmode": "verify-full",
            "sslrootcert": "/etc/peers.crt",
        },
    )
    settings = load_settings({**GOOD_PRODUCTION, "DATABASE_URL": CLUSTER_URL})
    assert settings["SQLALCHEMY_DATABASE_URI"] == url
    assert settings["SQLALCHEMY_BINDS"][READ_ONLY_BIND]["url"] == url


@pytest.mark.parametrize(
    "url",
    [
        CLUSTER_URL,
        "postgres://u:p@h1,h2:6000/app",  # the first on libpq's default port
        "postgresql://u@[2001:db8::1]:5433,[2001:db8::2]/app?sslmode=require",
        "postgresql://u:p@h1:5432,h2:5432",  # no database: the user's name
        "postgresql://u:p@h:5432/app?sslmode=require",  # one server: only the driver changes
    ],
)
def test_libpq_reads_the_same_connection_from_the_url_and_from_what_psycopg2_gets(url):
    from psycopg2.extensions import make_dsn, parse_dsn

    _, arguments = psycopg2_connect_arguments(sqlalchemy_url(url))
    assert parse_dsn(make_dsn(**arguments)) == parse_dsn(url)


def test_limits_gets_its_own_spelling_of_unix_sockets():
    assert limiter_storage_uri("redis://:p@h:6379/0") == "redis://:p@h:6379/0"
    assert limiter_storage_uri("unix:///s.sock?password=p") == "redis+unix:///s.sock?password=p"
