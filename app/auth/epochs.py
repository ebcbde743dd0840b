"""Who is logged in, from the session alone: no Postgres query, no Redis read beyond the
session's own.

At log-in the (server-side) session keeps what pages need of the user (id, name, admin flag)
and the account's *epoch*: a random value kept in Redis under one key per account, without
expiry. Every session that holds an account is also listed in that account's set of sessions
(`store`, at each write of the session). Deleting an account, taking away its admin rights or
changing its password ends its sessions (`end_sessions`): the epoch is deleted, then every
listed session. A request then finds no session and is a stranger's; the next log-in starts a
new epoch.

A write of a session checks the account's epoch after listing and writing it, in the same
round trip, and deletes what it wrote if the epoch is no longer the one the session was
started on: a session written by a request that was already running when its account's
sessions ended (a log-in, a flash message) does not outlive them. `end_sessions` deletes the
epoch before it reads the list, so a write either is listed in time to be deleted or sees the
epoch gone.

Only what goes through `end_sessions` ends sessions: the CLI commands that change accounts
(app/cli.py) call it; a change made with SQL by hand must be followed by `flask end-sessions`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import session
from flask_login import UserMixin
from redis import Redis
from sqlalchemy import select

from app.extensions import db, get_redis
from app.models import User

SESSION_KEY = "_account"
EPOCH_KEY = "account-epoch:{}"
SESSIONS_KEY = "account-sessions:{}"


@dataclass(frozen=True)
class SessionUser(UserMixin):
    """The logged-in user as the session knows it; views that write load the `User` row."""

    id: int
    username: str
    is_admin: bool


def epoch_of(user_id: int) -> str:
    """The account's current epoch, starting one if it has none (one round trip)."""
    fresh = secrets.token_hex(16)
    existing = get_redis().set(EPOCH_KEY.format(user_id), fresh, nx=True, get=True)
    return existing.decode() if existing is not None else fresh


def remember(user: User) -> SessionUser | None:
    """Keep in the session what requests need of `user`, whose password this request checked
    (before flask_login.login_user); None if the account changed meanwhile (deleted, or a new
    password), and then nothing is kept.

    The epoch comes first, the account's row is read again after it: a change committed
    before that read is seen in it, and one committed after it deletes the epoch just taken
    (`end_sessions` runs after the commit). Reading the row only before taking the epoch would
    let a change that lands in between leave a session on the old state with a fresh epoch.
    """
    checked_hash = user.password_hash
    epoch = epoch_of(user.id)
    # Columns, not the entity: the identity map would hand back the row as first read.
    now = db.session.execute(
        select(User.username, User.is_admin, User.password_hash).where(User.id == user.id)
    ).one_or_none()
    if now is None or now.password_hash != checked_hash:
        return None
    session[SESSION_KEY] = {
        "id": user.id,
        "username": now.username,
        "is_admin": now.is_admin,
        "epoch": epoch,
        "listed": True,  # written by `store` only, which lists it
    }
    return SessionUser(user.id, now.username, now.is_admin)


def load(user_id: str) -> SessionUser | None:
    """Flask-Login's user loader: the user the session holds. An ended session was deleted, so
    a session that is still there is current. One written by a release before the sessions
    were listed is checked against the epoch once and listed (written again) if it holds."""
    known = session.get(SESSION_KEY)
    # A session with Flask-Login's user id but not ours comes from a release before epochs:
    # it ends like one whose epoch changed.
    valid = known is not None and str(known["id"]) == user_id
    if valid and not known.get("listed"):
        epoch = get_redis().get(EPOCH_KEY.format(known["id"]))
        valid = epoch is not None and epoch.decode() == known["epoch"]
        if valid:
            session[SESSION_KEY] = {**known, "listed": True}
    if not valid:
        session.clear()  # ended: Flask-Session deletes it in Redis and expires the cookie
        return None
    return SessionUser(known["id"], known["username"], known["is_admin"])


def store(redis: Redis, store_id: str, data: bytes, lifetime: int, account: dict | None) -> None:
    """Write a session (Flask-Session's store id and encoded data). One that holds `account` is
    listed first, and kept only if the account's epoch is still the one it was started on: a
    session written after its account's sessions ended is deleted at once. One round trip."""
    if account is None:
        redis.set(store_id, data, ex=lifetime)
        return
    listed = SESSIONS_KEY.format(account["id"])
    pipe = redis.pipeline(transaction=False)
    # Listed before it is written: a Redis that loses its last writes keeps no unlisted session.
    pipe.sadd(listed, store_id)
    # The list outlives every session in it, even after SESSION_LIFETIME is shortened.
    pipe.expire(listed, lifetime, nx=True)
    pipe.expire(listed, lifetime, gt=True)
    pipe.set(store_id, data, ex=lifetime)
    pipe.get(EPOCH_KEY.format(account["id"]))
    epoch = pipe.execute()[-1]
    if epoch is None or epoch.decode() != account.get("epoch"):
        redis.delete(store_id)


def end_sessions(user_id: int) -> None:
    """End every session of the account. Call it after the change is committed: a log-in in
    between would otherwise start a session on the old state."""
    redis = get_redis()
    # The epoch first: a session written from now on sees it gone and deletes itself.
    redis.delete(EPOCH_KEY.format(user_id))
    _delete_listed(redis, SESSIONS_KEY.format(user_id))


def _delete_listed(redis: Redis, listed: str) -> None:
    store_ids = redis.smembers(listed)
    if store_ids:
        # Only those read: one listed meanwhile belongs to a session on a new epoch.
        pipe = redis.pipeline(transaction=False)
        pipe.delete(*store_ids)
        pipe.srem(listed, *store_ids)
        pipe.execute()


def end_all_sessions() -> int:
    """End every session of every account (after changing many with SQL); returns how many
    accounts had sessions."""
    redis = get_redis()
    ended: set[str] = set()
    # Every epoch before any list, as end_sessions does for one account.
    batch: list[bytes] = []
    for key in redis.scan_iter(match=EPOCH_KEY.format("*"), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            redis.delete(*batch)
            ended.update(key.decode().rpartition(":")[2] for key in batch)
            batch = []
    if batch:
        redis.delete(*batch)
        ended.update(key.decode().rpartition(":")[2] for key in batch)
    for key in redis.scan_iter(match=SESSIONS_KEY.format("*"), count=1000):
        ended.add(key.decode().rpartition(":")[2])
        _delete_listed(redis, key)
    return len(ended)
