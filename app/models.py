"""Database models: users, posts and comments (posts and comments are soft-deleted)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, DateTime, ForeignKey, Index, String, Text, select, text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db

USERNAME_PATTERN = r"^[A-Za-z0-9_-]{3,32}$"
TITLE_MAX = 200
POST_BODY_MAX = 20_000
COMMENT_BODY_MAX = 5_000
API_TOKEN_PREFIX = "fst_"  # noqa: S105 - a marker, not a secret


def utcnow() -> datetime:
    return datetime.now(UTC)


class SoftDeleteMixin:
    """Deleting keeps the row (and its history) and hides it; admins can restore it."""

    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def soft_delete(self) -> None:
        self.deleted_at = utcnow()

    def restore(self) -> None:
        self.deleted_at = None


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # SHA-256 of the API token: the token is 256 random bits, so a fast hash is enough and
    # a leaked database does not leak usable tokens.
    api_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    posts: Mapped[list[Post]] = relationship(back_populates="author")

    def set_password(self, password: str) -> None:
        # Werkzeug's default is scrypt with a random salt.
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def issue_api_token(self) -> str:
        """Create a new API token (replacing any old one); only its hash is stored."""
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.api_token_hash = hash_token(token)
        return token

    @classmethod
    def by_api_token(cls, token: str) -> User | None:
        if not token.startswith(API_TOKEN_PREFIX) or len(token) > 100:
            return None
        return db.session.scalar(select(cls).where(cls.api_token_hash == hash_token(token)))

    def to_dict(self) -> dict:
        return {"username": self.username, "created_at": self.created_at.isoformat()}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Post(SoftDeleteMixin, db.Model):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    author: Mapped[User] = relationship(back_populates="posts", lazy="joined")
    comments: Mapped[list[Comment]] = relationship(back_populates="post")

    __table_args__ = (
        # Pages list the newest live posts first, by keyset on id: these partial indexes keep
        # that an index range scan however many posts (or deleted posts) there are.
        Index("ix_posts_live_id", "id", postgresql_where=text("deleted_at IS NULL")),
        Index(
            "ix_posts_live_author_id",
            "author_id",
            "id",
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_posts_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    )

    @property
    def author_name(self) -> str:
        return self.author.username

    def to_dict(self) -> dict:
        return post_dict(self)


def post_dict(post) -> dict:
    """A post as the API shows it, from a `Post` or a row of a post list (app/queries.py)."""
    return {
        "id": post.id,
        "title": post.title,
        "body": post.body,
        "author": post.author_name,
        "created_at": post.created_at.isoformat(),
        "updated_at": post.updated_at.isoformat() if post.updated_at else None,
    }


class Comment(SoftDeleteMixin, db.Model):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    post: Mapped[Post] = relationship(back_populates="comments")
    author: Mapped[User] = relationship(lazy="joined")

    __table_args__ = (
        Index(
            "ix_comments_live_post_id", "post_id", "id", postgresql_where=text("deleted_at IS NULL")
        ),
        Index(
            "ix_comments_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")
        ),
    )

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "post_id": self.post_id,
            "body": self.body,
            "author": self.author.username,
            "created_at": self.created_at.isoformat(),
        }
