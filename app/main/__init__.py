"""Pages: the post list, a post with its comments, an author's page, writing and editing."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.extensions import db
from app.forms import CommentForm, ConfirmForm, PostForm
from app.models import Comment, Post, utcnow
from app.queries import (
    can_edit,
    get_comment_or_404,
    get_editable_post_or_404,
    get_post_or_404,
    get_user_or_404,
    live_posts,
    page_of_comments,
    page_of_posts,
)
from app.tasks import queue_comment_notification
from app.templating import listed_posts

bp = Blueprint("main", __name__)


def _cursor(name: str) -> int | None:
    value = request.args.get(name, type=int)
    return value if value is not None and value > 0 else None


@bp.get("/")
def index():
    posts, next_before = page_of_posts(
        live_posts(), _cursor("before"), current_app.config["PAGE_SIZE"]
    )
    return render_template("main/index.html", posts=listed_posts(posts), next_before=next_before)


@bp.get("/u/<username>")
def author(username: str):
    user = get_user_or_404(username)
    posts, next_before = page_of_posts(
        live_posts(user), _cursor("before"), current_app.config["PAGE_SIZE"]
    )
    return render_template(
        "main/author.html", author=user, posts=listed_posts(posts), next_before=next_before
    )


def render_post_page(found: Post, after: int | None, comment_form: CommentForm | None = None):
    comments, next_after = page_of_comments(found, after, 100)
    # Only signed-in visitors get forms, so anonymous page views need no session cookie.
    signed_in = current_user.is_authenticated
    return render_template(
        "main/post.html",
        post=found,
        comments=comments,
        next_after=next_after,
        can_edit=can_edit(current_user, found),
        comment_form=(comment_form or CommentForm()) if signed_in else None,
        confirm_form=ConfirmForm() if signed_in else None,
    )


@bp.get("/posts/<int:post_id>")
def post(post_id: int):
    return render_post_page(get_post_or_404(post_id, current_user), _cursor("after"))


@bp.route("/posts/new", methods=["GET", "POST"])
@login_required
def new_post():
    form = PostForm()
    if form.validate_on_submit():
        created = Post(author_id=current_user.id, title=form.title.data, body=form.body.data)
        db.session.add(created)
        db.session.commit()
        flash("Your post is published.")
        return redirect(url_for("main.post", post_id=created.id))
    return render_template("main/edit.html", form=form, post=None), 400 if form.errors else 200


@bp.route("/posts/<int:post_id>/edit", methods=["GET", "POST"])
@login_required
def edit_post(post_id: int):
    found = get_editable_post_or_404(post_id, current_user)
    form = PostForm(obj=found)
    if form.validate_on_submit():
        found.title = form.title.data
        found.body = form.body.data
        found.updated_at = utcnow()
        db.session.commit()
        flash("Your changes are saved.")
        return redirect(url_for("main.post", post_id=found.id))
    return render_template("main/edit.html", form=form, post=found), 400 if form.errors else 200


@bp.post("/posts/<int:post_id>/delete")
@login_required
def delete_post(post_id: int):
    found = get_editable_post_or_404(post_id, current_user)
    found.soft_delete()
    db.session.commit()
    flash("The post is deleted.")
    return redirect(url_for("main.author", username=found.author.username))


@bp.post("/posts/<int:post_id>/comments")
@login_required
def add_comment(post_id: int):
    found = get_post_or_404(post_id, current_user)
    form = CommentForm()
    if not form.validate_on_submit():
        return render_post_page(found, None, comment_form=form), 400
    comment = Comment(post=found, author_id=current_user.id, body=form.body.data)
    db.session.add(comment)
    db.session.commit()
    queue_comment_notification(comment)
    return redirect(url_for("main.post", post_id=found.id, _anchor=f"comment-{comment.id}"))


@bp.post("/comments/<int:comment_id>/delete")
@login_required
def delete_comment(comment_id: int):
    comment = get_comment_or_404(comment_id, current_user)
    if not (current_user.is_admin or comment.author_id == current_user.id):
        abort(403, description="Only the comment's author can delete it.")
    comment.soft_delete()
    db.session.commit()
    flash("The comment is deleted.")
    return redirect(url_for("main.post", post_id=comment.post_id))
