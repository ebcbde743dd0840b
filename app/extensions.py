"""Extensions, created unbound here and bound to an app in `create_app`."""

from __future__ import annotations

import redis
from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from sqlalchemy.orm import DeclarativeBase

from app.config import REDIS_SOCKET_TIMEOUT_S


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)


def make_redis(url: str) -> redis.Redis:
    """A Redis client that fails fast: short timeouts and a single quick retry.

    The retry covers the common case of a pooled connection that died when Redis restarted;
    anything longer than that is an outage and the request gets a 503 instead of waiting.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.2), retries=1),
    )


def get_redis() -> redis.Redis:
    return current_app.extensions["redis"]
