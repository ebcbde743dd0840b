"""Admin pages: see soft-deleted posts and comments and restore them."""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from app.extensions import db
from app.forms import ConfirmForm
from app.queries import deleted_items, get_comment_or_404, get_post_or_404

bp = Blueprint("admin", __name__, url_prefix="/admin")


def admin_required(view):
    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403, description="This page is for administrators.")
        return view(*args, **kwargs)

    return wrapped


@bp.get("/deleted")
@admin_required
def deleted():
    posts, comments = deleted_items()
    return render_template("admin/deleted.html", posts=posts, comments=comments, form=ConfirmForm())


@bp.post("/posts/<int:post_id>/restore")
@admin_required
def restore_post(post_id: int):
    get_post_or_404(post_id, current_user).restore()
    db.session.commit()
    flash("The post is restored.")
    return redirect(url_for("admin.deleted"))


@bp.post("/comments/<int:comment_id>/restore")
@admin_required
def restore_comment(comment_id: int):
    get_comment_or_404(comment_id, current_user).restore()
    db.session.commit()
    flash("The comment is restored.")
    return redirect(url_for("admin.deleted"))
