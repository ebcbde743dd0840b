"""JSON API, /api/v1.

Authentication: per-user API tokens, sent as `Authorization: Bearer <token>`. A token is
created by `POST /api/v1/tokens` with `{"username": …, "password": …}` (rate-limited like the
log-in form) or on the "API token" page, and only its SHA-256 is stored. Tokens suit scripts
and load tests, and since no cookie authenticates an API request there is nothing for a
cross-site request to ride on: the API is exempt from CSRF checks. Reads need no token.

Lists are paginated newest first (posts) or oldest first (comments); the next page is
announced in a `Link: <…>; rel="next"` header. Every error is JSON `{"message": …}`.
"""

from __future__ import annotations

from functools import wraps

from flask import Blueprint, abort, current_app, g, request, url_for
from werkzeug.exceptions import BadRequest

from app.auth import authenticate, login_rate_limit
from app.extensions import csrf, db, limiter
from app.models import (
    COMMENT_BODY_MAX,
    POST_BODY_MAX,
    TITLE_MAX,
    Comment,
    Post,
    User,
    post_dict,
)
from app.queries import (
    get_comment_or_404,
    get_post_or_404,
    live_posts,
    page_of_comments,
    page_of_posts,
)
from app.tasks import queue_comment_notification
from app.validation import InvalidTextError, clean_text

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

MAX_PAGE_SIZE = 100


def token_required(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = User.by_api_token(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            return (
                {"message": "A valid API token is required (Authorization: Bearer <token>)."},
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        g.api_user = user
        return view(*args, **kwargs)

    return wrapped


def json_body() -> dict:
    if not request.is_json:
        abort(415, description="Send a JSON object with Content-Type: application/json.")
    try:
        body = request.get_json()
    except BadRequest:
        abort(400, description="The request body is not valid JSON (UTF-8).")
    except RecursionError:  # the parser's answer to [[[[… nested beyond Python's stack
        abort(400, description="The JSON document is nested too deeply.")
    if not isinstance(body, dict):
        abort(400, description="The request body must be a JSON object.")
    return body


def text_field(body: dict, name: str, max_length: int) -> str:
    try:
        return clean_text(body.get(name), name, max_length)
    except InvalidTextError as exc:
        abort(400, description=str(exc))


def page_size() -> int:
    limit = request.args.get("limit", type=int) or current_app.config["PAGE_SIZE"]
    return max(1, min(limit, MAX_PAGE_SIZE))


def cursor(name: str) -> int | None:
    value = request.args.get(name, type=int)
    return value if value is not None and value > 0 else None


def next_link(endpoint: str, **params) -> dict:
    url = url_for(endpoint, _external=True, **params)
    return {"Link": f'<{url}>; rel="next"'}


@bp.get("/posts")
def list_posts():
    limit = page_size()
    posts, next_before = page_of_posts(live_posts(excerpt=False), cursor("before"), limit)
    headers = next_link("api.list_posts", before=next_before, limit=limit) if next_before else {}
    return {"posts": [post_dict(post) for post in posts]}, 200, headers


@bp.get("/posts/<int:post_id>")
def get_post(post_id: int):
    return get_post_or_404(post_id).to_dict()


@bp.post("/posts")
@token_required
def create_post():
    body = json_body()
    post = Post(
        author=g.api_user,
        title=text_field(body, "title", TITLE_MAX),
        body=text_field(body, "body", POST_BODY_MAX),
    )
    db.session.add(post)
    db.session.commit()
    return post.to_dict(), 201, {"Location": url_for("api.get_post", post_id=post.id)}


@bp.get("/posts/<int:post_id>/comments")
def list_comments(post_id: int):
    post = get_post_or_404(post_id)
    limit = page_size()
    comments, next_after = page_of_comments(post, cursor("after"), limit)
    headers = (
        next_link("api.list_comments", post_id=post.id, after=next_after, limit=limit)
        if next_after
        else {}
    )
    return {"comments": [comment.to_dict() for comment in comments]}, 200, headers


@bp.post("/posts/<int:post_id>/comments")
@token_required
def create_comment(post_id: int):
    post = get_post_or_404(post_id)
    comment = Comment(
        post=post, author=g.api_user, body=text_field(json_body(), "body", COMMENT_BODY_MAX)
    )
    db.session.add(comment)
    db.session.commit()
    queue_comment_notification(comment)
    return comment.to_dict(), 201, {"Location": url_for("api.get_comment", comment_id=comment.id)}


@bp.get("/comments/<int:comment_id>")
def get_comment(comment_id: int):
    return get_comment_or_404(comment_id).to_dict()


@bp.post("/tokens")
@limiter.limit(login_rate_limit)
def create_token():
    """Exchange a username and password for a new API token (the old one stops working)."""
    body = json_body()
    username = text_field(body, "username", 64)
    password = text_field(body, "password", 256)
    user = authenticate(username, password)
    if user is None:
        abort(401, description="Unknown username or wrong password.")
    token = user.issue_api_token()
    db.session.commit()
    return {"token": token, "username": user.username}, 201


@bp.get("/me")
@token_required
def me():
    return g.api_user.to_dict()
