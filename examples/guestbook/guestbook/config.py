"""Settings from the environment, and nothing else: production refuses to start without real
secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping

MIN_SECRET_KEY_LENGTH = 32
KNOWN_DEFAULT_SECRETS = {"", "change-me", "changeme", "secret", "dev", "development"}


class ConfigError(RuntimeError):
    """A setting is missing or unsafe; the message says which and what to do."""


def load_settings(env: Mapping[str, str] | None = None) -> dict:
    # An empty variable means unset, as the stack's contract says (Compose passes each setting,
    # empty where .env leaves it empty).
    env = {name: value for name, value in (os.environ if env is None else env).items() if value}
    app_env = env.get("APP_ENV", "production")
    if app_env not in ("production", "development", "testing"):
        raise ConfigError(f"APP_ENV must be production, development or testing, got {app_env!r}")
    production = app_env == "production"
    secret_key = env.get("SECRET_KEY", "")
    database_url = env.get("DATABASE_URL", "")
    if production:
        if secret_key.lower() in KNOWN_DEFAULT_SECRETS or len(secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"SECRET_KEY must be a random value of at least {MIN_SECRET_KEY_LENGTH} "
                "characters in production"
            )
        if not database_url:
            raise ConfigError("DATABASE_URL must be set in production")
    # psycopg2, the driver the lock file ships: SQLAlchemy 2.1 maps a bare postgresql:// to
    # psycopg 3; postgres:// is the old name it refuses.
    for scheme in ("postgresql://", "postgres://"):
        if database_url.startswith(scheme):
            database_url = "postgresql+psycopg2://" + database_url.removeprefix(scheme)
    return {
        "APP_ENV": app_env,
        "TESTING": app_env == "testing",
        "SECRET_KEY": secret_key or f"insecure-{app_env}-key",
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
        "SQLALCHEMY_DATABASE_URI": database_url
        or "postgresql+psycopg2://guestbook@127.0.0.1/guestbook",
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "MAX_CONTENT_LENGTH": 64 * 1024,
        # Flask's own session: a signed cookie holding the CSRF token and flash messages.
        "SESSION_COOKIE_NAME": "__Host-guestbook" if production else "guestbook",
        "SESSION_COOKIE_SECURE": production,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
        "WTF_CSRF_SSL_STRICT": production,
    }
