"""Extensions, created unbound here and bound to an app in `create_app`."""

from __future__ import annotations

import logging
import select

import redis
import sqlalchemy as sa
from flask import Flask, current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSQLAlchemySession
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from app import redis_connection
from app.config import READ_ONLY_BIND, REDIS_FAILOVER_WAIT_S, REDIS_SOCKET_TIMEOUT_S

log = logging.getLogger(__name__)

# Requests that must not change anything (RFC 9110 safe methods that reach a view).
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


class Base(DeclarativeBase):
    pass


class Session(FlaskSQLAlchemySession):
    """Flask-SQLAlchemy's session, sending every statement of a read-only request (GET, HEAD:
    `g.db_read_only`, set by `create_app`) to the read-only engine: autocommit, no pre-ping,
    read-only in Postgres. Everything else (other requests, CLI, worker) uses the default,
    transactional engine."""

    def get_bind(self, mapper=None, clause=None, bind=None, **kwargs):
        if bind is None and g.get("db_read_only"):
            return self._db.engines[READ_ONLY_BIND]
        return super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)


# After a commit a view answers from the objects it wrote instead of reading them back: a round
# trip less per write, and a primary change that ends the session right after the commit cannot
# fail a request whose write is done (app/primary_change.py).
db = SQLAlchemy(model_class=Base, session_options={"class_": Session, "expire_on_commit": False})
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)


def make_redis(url: str) -> redis.Redis:
    """The app's Redis client for REDIS_URL: a server, or the master its Sentinels name
    (app/redis_connection.py)."""
    return redis_connection.make_client(url, REDIS_SOCKET_TIMEOUT_S, REDIS_FAILOVER_WAIT_S)


def get_redis() -> redis.Redis:
    return current_app.extensions["redis"]


def _socket_is_quiet(fileno: int) -> bool:
    """True if nothing is waiting on an idle connection's socket. Postgres says nothing to an
    idle client unless it is going away: on shutdown, restart, `pg_terminate_backend` or an
    idle timeout it sends an error and closes, which makes the socket readable (or hung up).
    A poll with no timeout: a system call, not a round trip."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def connection_is_quiet(dbapi_connection) -> bool:
    """Whether a pooled psycopg2 connection looks alive (a hook tests can replace)."""
    return not dbapi_connection.closed and _socket_is_quiet(dbapi_connection.fileno())


def _connected(dbapi_connection, connection_record) -> None:
    # Read-only from here on, not from the start (the `options` of the connection): libpq's
    # target_session_attrs=read-write, which finds a cluster's primary, refuses a session whose
    # default_transaction_read_only is on when it starts.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET default_transaction_read_only = on")
    connection_record.info["just_connected"] = True


def _check_out(dbapi_connection, connection_record, connection_proxy) -> None:
    # A connection made for this checkout needs no look (nor could it loop on a false alarm).
    if connection_record.info.pop("just_connected", False):
        return
    if not connection_is_quiet(dbapi_connection):
        log.info("a pooled database connection was closed by the server; reconnecting")
        # The pool replaces it, and every connection older than now (after a restart, all).
        raise sa.exc.InvalidatePoolError("the server closed the connection")


def init_read_only_engine(app: Flask) -> None:
    """Make the read-only engine's connections read-only in Postgres as they are made, and
    check its pooled ones at checkout without pre-ping's round trip (`connection_is_quiet`);
    what that cannot see (a server that vanished without a word) fails the first statement,
    which invalidates the pool, and `FlaskStack` (app/__init__.py) runs the view again."""
    with app.app_context():
        engine = db.engines[READ_ONLY_BIND]
    sa.event.listen(engine, "connect", _connected)
    sa.event.listen(engine, "checkout", _check_out)
