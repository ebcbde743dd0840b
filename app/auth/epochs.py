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

from app.extensions import get_redis
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


def remember(user: User) -> None:
    """Keep in the session what requests need of `user` (before flask_login.login_user)."""
    session[SESSION_KEY] = {
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "epoch": epoch_of(user.id),
    }


def load(user_id: str) -> SessionUser | None:
    """Flask-Login's user loader: the session's user while the account's epoch is unchanged."""
    known = session.get(SESSION_KEY)
    if not known or str(known["id"]) != user_id:
        return None
    epoch = get_redis().get(EPOCH_KEY.format(known["id"]))
    if epoch is None or epoch.decode() != known["epoch"]:
        session.clear()  # ended: Flask-Session deletes it in Redis and expires the cookie
        return None
    return SessionUser(known["id"], known["username"], known["is_admin"])


def end_sessions(user_id: int) -> None:
    """End every session of the account at its next request. Call it after the change is
    committed: a request between the two would otherwise start a session on the old state."""
    get_redis().delete(EPOCH_KEY.format(user_id))
