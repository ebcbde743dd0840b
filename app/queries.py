"""What each user may see and change, decided here once instead of in every view.

Everyone sees live (not soft-deleted) posts and comments; admins also see deleted ones so
they can restore them. Authors edit and delete their own posts; admins any post.
Lists use keyset pagination on id (newest first for posts, oldest first for comments):
constant cost per page however large the tables grow. Post lists, the busiest reads, are plain
rows of the columns they show (`PostSummary`), not ORM objects: no identity map, no author
object with its password hash, and only the start of each body for the pages.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import NamedTuple

from flask import abort
from sqlalchemy import Select, bindparam, func, select

from app.extensions import db
from app.models import Comment, Post, User


def _viewer_is_admin(viewer: User | None) -> bool:
    return bool(viewer is not None and viewer.is_authenticated and viewer.is_admin)


def get_post_or_404(post_id: int, viewer: User | None = None) -> Post:
    post = db.session.get(Post, post_id)
    if post is None or (post.is_deleted and not _viewer_is_admin(viewer)):
        abort(404, description="No such post.")
    return post


def get_comment_or_404(comment_id: int, viewer: User | None = None) -> Comment:
    comment = db.session.get(Comment, comment_id)
    if comment is None or (comment.is_deleted and not _viewer_is_admin(viewer)):
        abort(404, description="No such comment.")
    return comment


def get_user_or_404(username: str) -> User:
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        abort(404, description="No such author.")
    return user


def can_edit(user: User | None, post: Post) -> bool:
    if user is None or not user.is_authenticated:
        return False
    return user.is_admin or post.author_id == user.id


def get_editable_post_or_404(post_id: int, user: User) -> Post:
    post = get_post_or_404(post_id, user)
    if not can_edit(user, post):
        abort(403, description="Only the author can change this post.")
    return post


# What a page shows of each post in a list: `truncate(280)` in _macros.html keeps at most 285
# characters, so 300 are enough and a 20 000-character post costs no more than a short one.
EXCERPT_CHARS = 300


class PostSummary(NamedTuple):
    """A post in a list: the attributes `models.post_dict` reads, which an ORM `Post` has too.
    A tuple of its own rather than SQLAlchemy's `Row`, whose attributes are slower to read."""

    id: int
    title: str
    body: str
    created_at: datetime
    updated_at: datetime | None
    author_name: str


class PostList(NamedTuple):
    """Which live posts a list shows: everyone's or one author's, the start of each body
    (pages) or the whole of it (the API)."""

    author_id: int | None
    excerpt: bool


def live_posts(author: User | None = None, *, excerpt: bool = True) -> PostList:
    """Which live posts `page_of_posts` reads, newest first, as `PostSummary` rows: everyone's or
    `author`'s; `excerpt` cuts bodies to EXCERPT_CHARS (pages), the API asks for whole bodies."""
    return PostList(author.id if author is not None else None, excerpt)


def _page_statement(excerpt: bool, by_author: bool, paged: bool) -> Select:
    body = func.left(Post.body, EXCERPT_CHARS) if excerpt else Post.body
    # A subquery rather than a join: the same rows (every post has an author), and Postgres
    # plans it faster; planning took as long as running it.
    author_name = select(User.username).where(User.id == Post.author_id).scalar_subquery()
    stmt = select(
        Post.id,
        Post.title,
        body.label("body"),
        Post.created_at,
        Post.updated_at,
        author_name.label("author_name"),
    ).where(Post.deleted_at.is_(None))
    if by_author:
        stmt = stmt.where(Post.author_id == bindparam("author_id"))
    if paged:
        stmt = stmt.where(Post.id < bindparam("before"))
    if tuple(stmt.selected_columns.keys()) != PostSummary._fields:
        raise RuntimeError("a post list selects the fields of PostSummary, in their order")
    return stmt.order_by(Post.id.desc()).limit(bindparam("limit"))


# Built once: constructing a statement cost as much Python as running it.
_PAGE_STATEMENTS = {
    variant: _page_statement(*variant) for variant in itertools.product((True, False), repeat=3)
}


def page_of_posts(
    posts: PostList, before: int | None, limit: int
) -> tuple[list[PostSummary], int | None]:
    """A page of `live_posts` and the cursor for the next one (None at the end)."""
    stmt = _PAGE_STATEMENTS[posts.excerpt, posts.author_id is not None, before is not None]
    # Core, not the ORM: no ORM execution context, no rows built through the ORM's loader.
    result = db.session.connection().execute(
        stmt, {"author_id": posts.author_id, "before": before, "limit": limit + 1}
    )
    rows = list(map(PostSummary._make, result.all()))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def page_of_comments(post: Post, after: int | None, limit: int) -> tuple[list[Comment], int | None]:
    """Oldest first, so a conversation reads top to bottom."""
    stmt = select(Comment).where(Comment.post_id == post.id, Comment.deleted_at.is_(None))
    if after is not None:
        stmt = stmt.where(Comment.id > after)
    rows = list(db.session.scalars(stmt.order_by(Comment.id).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def deleted_items() -> tuple[list[Post], list[Comment]]:
    posts = db.session.scalars(
        select(Post).where(Post.deleted_at.is_not(None)).order_by(Post.deleted_at.desc())
    )
    comments = db.session.scalars(
        select(Comment).where(Comment.deleted_at.is_not(None)).order_by(Comment.deleted_at.desc())
    )
    return list(posts), list(comments)
