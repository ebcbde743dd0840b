"""Registration, log in and out, and the personal API token.

The session id is rotated at log-in (no session fixation) and the server-side session is
destroyed at log-out. Log-in and registration are rate-limited per client address, with the
counters in Redis so every worker and app host shares them.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from app.auth import epochs
from app.extensions import db, limiter, login_manager
from app.forms import ConfirmForm, LoginForm, RegisterForm
from app.models import User

bp = Blueprint("auth", __name__)

LOGIN_FAILED = "Unknown username or wrong password."
ALREADY_REGISTERED = "That username or e-mail address is already registered."


# The user from the session alone: no Postgres query, no Redis read (app/auth/epochs.py).
login_manager.user_loader(epochs.load)


def login_rate_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def start_session_for(user: User) -> bool:
    """Rotate the session id, then log in: a session id seen before login is worthless after.
    False, and nobody logged in, if the account was deleted or given a new password since
    `user` was read (app/auth/epochs.py)."""
    current_app.session_interface.regenerate(session)
    account = epochs.remember(user)
    if account is None:
        return False
    login_user(account)
    return True


def authenticate(username: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        # Hash anyway so a wrong username takes as long as a wrong password.
        User().set_password(password)
        return None
    return user if user.check_password(password) else None


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(login_rate_limit, methods=["POST"])
def register():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = RegisterForm()
    if form.validate_on_submit():
        taken = db.session.scalar(
            select(User).where(
                or_(User.username == form.username.data, User.email == form.email.data)
            )
        )
        if taken is not None:
            form.username.errors.append(ALREADY_REGISTERED)
        else:
            user = User(username=form.username.data, email=form.email.data)
            user.set_password(form.password.data)
            db.session.add(user)
            try:
                db.session.commit()
            except IntegrityError:  # the same name registered a moment ago
                db.session.rollback()
                form.username.errors.append(ALREADY_REGISTERED)
            else:
                if not start_session_for(user):  # changed by an operator a moment ago
                    return redirect(url_for("auth.login"))
                flash(f"Welcome, {user.username}!")
                return redirect(url_for("main.index"))
    return render_template("auth/register.html", form=form), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_rate_limit, methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.username.data, form.password.data)
        if user is not None and start_session_for(user):
            return redirect(url_for("main.index"))
        form.password.errors.append(LOGIN_FAILED)
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.post("/logout")
def logout():
    logout_user()
    # Clearing an emptied session makes Flask-Session delete it in Redis and expire the cookie.
    session.clear()
    return redirect(url_for("main.index"))


@bp.route("/settings/token", methods=["GET", "POST"])
@login_required
def api_token():
    form = ConfirmForm()
    token = None
    if form.validate_on_submit():
        token = db.session.get(User, current_user.id).issue_api_token()
        db.session.commit()
    return render_template("auth/token.html", form=form, token=token)
