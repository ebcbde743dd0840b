"""The guestbook: read the entries, sign it. Bad input gets its page back with what to fix
(400), never a 500."""

from __future__ import annotations

from flask import (
    Blueprint,
    Flask,
    Response,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from guestbook.extensions import db
from guestbook.models import MESSAGE_MAX, NAME_MAX, Entry

bp = Blueprint("book", __name__)
SHOWN = 50


def problems_with(name: str, message: str) -> list[str]:
    problems = []
    if not 1 <= len(name) <= NAME_MAX:
        problems.append(f"Your name must be 1 to {NAME_MAX} characters long.")
    if not 1 <= len(message) <= MESSAGE_MAX:
        problems.append(f"Your message must be 1 to {MESSAGE_MAX} characters long.")
    if any(not (char.isprintable() or char in "\r\n") for char in name + message):
        problems.append("Control characters are not allowed.")
    return problems


def page(status: int = 200, problems: list[str] | None = None, form: dict | None = None):
    entries = db.session.scalars(select(Entry).order_by(Entry.id.desc()).limit(SHOWN)).all()
    html = render_template("index.html", entries=entries, problems=problems or [], form=form or {})
    return html, status


@bp.get("/")
def index():
    return page()


@bp.post("/")
def sign():
    name = request.form.get("name", "").strip()
    message = request.form.get("message", "").strip()
    problems = problems_with(name, message)
    if problems:
        return page(400, problems, {"name": name, "message": message})
    db.session.add(Entry(name=name, message=message))
    db.session.commit()
    flash("Thank you for signing the guestbook.")
    return redirect(url_for("book.index"), 303)


def error_page(status: int, message: str):
    return render_template("error.html", status=status, message=message), status


def register_error_pages(app: Flask) -> None:
    @app.after_request
    def private_when_personal(response: Response) -> Response:
        # A page carrying this visitor's CSRF token or flash message is theirs alone: shared
        # caches (the stack's microcache) must not keep it.
        if session or session.modified:
            response.cache_control.private = True
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError):
        return error_page(400, "The form expired or came from elsewhere: reload and try again.")

    @app.errorhandler(404)
    def not_found(error):
        return error_page(404, "There is no such page.")

    @app.errorhandler(405)
    def not_allowed(error):
        return error_page(405, "This page does not take that method.")

    @app.errorhandler(413)
    def too_large(error):
        return error_page(413, "That is more than a guestbook entry can hold.")

    @app.errorhandler(OperationalError)
    def database_down(error):
        db.session.rollback()
        return error_page(503, "The guestbook is unavailable for a moment: try again soon.")

    @app.errorhandler(500)
    def failed(error):
        return error_page(500, "Something went wrong on our side.")
