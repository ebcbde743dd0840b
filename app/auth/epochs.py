"""Who is logged in, from one Redis read per request instead of a Postgres query.

At log-in the (server-side) session keeps what pages need of the user (id, name, admin flag)
and the account's *epoch*: a random value kept in Redis under one key per account, without
expiry. Each request reads that key and compares. Deleting an account, taking away its admin
rights or changing its password deletes the key (`end_sessions`), so every session of the
account stops at its next request; the next log-in starts a new epoch. A key that Redis lost
logs the account's sessions out: it never lets anyone in.

Only what goes through `end_sessions` ends sessions: the CLI commands that change accounts
(app/cli.py) call it; a change made with SQL by hand must be followed by `flask end-sessions`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import session
from flask_login import UserMixin
from sqlalchemy import select

from app.extensions import db, get_redis
from app.models import User

SESSION_KEY = "_account"
EPOCH_KEY = "account-epoch:{}"


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
    }
    return SessionUser(user.id, now.username, now.is_admin)


def load(user_id: str) -> SessionUser | None:
    """Flask-Login's user loader: the session's user while the account's epoch is unchanged.
    A Redis error propagates and becomes a 503 (app/errors.py), never an anonymous page."""
    known = session.get(SESSION_KEY)
    # A session with Flask-Login's user id but not ours comes from a release before epochs:
    # it ends like one whose epoch changed.
    valid = known is not None and str(known["id"]) == user_id
    epoch = get_redis().get(EPOCH_KEY.format(known["id"])) if valid else None
    if epoch is None or epoch.decode() != known["epoch"]:
        session.clear()  # ended: Flask-Session deletes it in Redis and expires the cookie
        return None
    return SessionUser(known["id"], known["username"], known["is_admin"])


def end_sessions(user_id: int) -> None:
    """End every session of the account at its next request. Call it after the change is
    committed: a log-in in between would otherwise start a session on the old state."""
    get_redis().delete(EPOCH_KEY.format(user_id))


def end_all_sessions() -> int:
    """End every session of every account (after changing many with SQL); returns how many
    accounts had sessions."""
    redis = get_redis()
    ended = 0
    batch: list[bytes] = []
    for key in redis.scan_iter(match=EPOCH_KEY.format("*"), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            ended += redis.delete(*batch)
            batch = []
    if batch:
        ended += redis.delete(*batch)
    return ended
