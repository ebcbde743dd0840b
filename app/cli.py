"""`flask --app app …` commands; each runs in an app context, no server needed."""

from __future__ import annotations

import random
from datetime import timedelta

import click
from flask import Flask
from sqlalchemy import delete, func, select

from app.auth import epochs
from app.extensions import db
from app.models import Comment, Post, User, utcnow
from app.schema import SchemaUpgradeBlockedError, backfill, upgrade_schema
from app.services import wait_for_services


def register(app: Flask) -> None:
    @app.cli.command("create-admin")
    @click.argument("username")
    @click.argument("email")
    @click.password_option(envvar="ADMIN_PASSWORD", help="Or set ADMIN_PASSWORD.")
    def create_admin(username: str, email: str, password: str) -> None:
        """Create an admin user, or make an existing user an admin and reset the password."""
        user = db.session.scalar(select(User).where(User.username == username))
        if user is None:
            user = User(username=username, email=email)
            db.session.add(user)
        user.is_admin = True
        user.set_password(password)
        db.session.commit()
        epochs.end_sessions(user.id)  # a new password ends the old sessions
        click.echo(f"admin {username} is ready")

    def user_named(username: str) -> User:
        user = db.session.scalar(select(User).where(User.username == username))
        if user is None:
            raise click.ClickException(f"no user named {username}")
        return user

    # Each account change is committed first, then ends the account's sessions
    # (app/auth/epochs.py), so that no request in between can start one on the old state.
    @app.cli.command("set-admin")
    @click.argument("username")
    @click.option("--revoke", is_flag=True, help="Take the admin rights away instead.")
    def set_admin(username: str, revoke: bool) -> None:
        """Make USERNAME an admin, or with --revoke an ordinary user (logged out at once)."""
        user = user_named(username)
        user.is_admin = not revoke
        db.session.commit()
        epochs.end_sessions(user.id)
        click.echo(f"{username} is {'no longer ' if revoke else ''}an admin; sessions ended")

    @app.cli.command("set-password")
    @click.argument("username")
    @click.password_option(envvar="NEW_PASSWORD", help="Or set NEW_PASSWORD.")
    def set_password(username: str, password: str) -> None:
        """Give USERNAME a new password, end every session of the account and revoke its API
        token: whoever knew the old password may have either."""
        user = user_named(username)
        user.set_password(password)
        user.api_token_hash = None
        db.session.commit()
        epochs.end_sessions(user.id)
        click.echo(f"new password for {username}; sessions ended, API token revoked")

    @app.cli.command("delete-user")
    @click.argument("username")
    @click.confirmation_option(prompt="Delete the user with their posts and comments?")
    def delete_user(username: str) -> None:
        """Delete USERNAME with their posts and comments, and end their sessions."""
        user = user_named(username)
        posts = select(Post.id).where(Post.author_id == user.id)
        db.session.execute(
            delete(Comment).where((Comment.author_id == user.id) | Comment.post_id.in_(posts))
        )
        db.session.execute(delete(Post).where(Post.author_id == user.id))
        db.session.delete(user)
        db.session.commit()
        epochs.end_sessions(user.id)
        click.echo(f"deleted {username}; sessions ended")

    # A change made with SQL by hand ends no session: run this after it.
    @app.cli.command("end-sessions")
    @click.argument("username", required=False)
    @click.option("--user-id", type=int, help="The account's id (for a row already deleted).")
    @click.option("--all", "everyone", is_flag=True, help="Every account (after a bulk change).")
    def end_sessions(username: str | None, user_id: int | None, everyone: bool) -> None:
        """Log USERNAME out everywhere, after changing the account with SQL by hand (run it
        after the commit). --user-id for a row deleted already, --all for every account."""
        if [username is not None, user_id is not None, everyone].count(True) != 1:
            raise click.UsageError("give one of USERNAME, --user-id or --all")
        if everyone:
            click.echo(f"sessions of {epochs.end_all_sessions()} accounts ended")
            return
        epochs.end_sessions(user_id if user_id is not None else user_named(username).id)
        click.echo(f"sessions of {username or f'account {user_id}'} ended")

    @app.cli.command("create-token")
    @click.argument("username")
    def create_token(username: str) -> None:
        """Print a new API token for USERNAME (replaces the old one)."""
        user = user_named(username)
        token = user.issue_api_token()
        db.session.commit()
        click.echo(token)

    @app.cli.command("seed")
    @click.option("--users", default=5, show_default=True)
    @click.option("--posts", default=50, show_default=True, help="Posts in total.")
    @click.option("--comments", default=3, show_default=True, help="Comments per post.")
    def seed(users: int, posts: int, comments: int) -> None:
        """Add demo users (password: demo-password) with posts and comments."""
        rng = random.Random(42)  # noqa: S311 - repeatable demo data, not secrets
        existing = db.session.scalar(select(func.count()).select_from(User)) or 0
        people = []
        for n in range(existing, existing + users):
            person = User(username=f"demo{n}", email=f"demo{n}@example.org")
            person.set_password("demo-password")
            people.append(person)
        db.session.add_all(people)
        db.session.flush()
        batch = []
        for n in range(posts):
            post = Post(
                author=rng.choice(people),
                title=f"Demo post {n + 1}",
                body=f"This is demo post number {n + 1}.\n\nIt has two paragraphs.",
            )
            post.comments = [
                Comment(author=rng.choice(people), body=f"Comment {c + 1} on post {n + 1}.")
                for c in range(comments)
            ]
            batch.append(post)
            if len(batch) >= 1000:  # keep memory flat for 100k-post benchmark data sets
                db.session.add_all(batch)
                db.session.commit()
                batch = []
        db.session.add_all(batch)
        db.session.commit()
        click.echo(f"seeded {users} users, {posts} posts, {posts * comments} comments")

    @app.cli.command("purge-deleted")
    @click.option(
        "--days",
        type=click.IntRange(min=0),
        required=True,
        help="Purge items soft-deleted more than this many days ago.",
    )
    def purge_deleted(days: int) -> None:
        """Permanently remove posts and comments soft-deleted more than DAYS days ago."""
        cutoff = utcnow() - timedelta(days=days)
        old_posts = select(Post.id).where(Post.deleted_at < cutoff)
        comments = db.session.execute(
            delete(Comment).where((Comment.deleted_at < cutoff) | Comment.post_id.in_(old_posts))
        ).rowcount
        posts = db.session.execute(delete(Post).where(Post.deleted_at < cutoff)).rowcount
        db.session.commit()
        click.echo(f"purged {posts} posts and {comments} comments deleted before {cutoff:%Y-%m-%d}")

    @app.cli.command("upgrade-schema")
    @click.option("--attempts", type=click.IntRange(min=1), default=5, show_default=True)
    @click.option("--first-delay", type=click.FloatRange(min=0), default=2.0, show_default=True,
                  help="Seconds before the first retry; doubled before each next one.")  # fmt: skip
    def upgrade_schema_command(attempts: int, first_delay: float) -> None:
        """Apply pending migrations; retry one that timed out waiting for a lock, with backoff."""
        try:
            taken = upgrade_schema(attempts, first_delay, log=click.echo)
        except SchemaUpgradeBlockedError as blocked:
            raise click.ClickException(str(blocked)) from None
        if taken:
            click.echo(f"schema is up to date ({taken} attempt{'s' if taken > 1 else ''})")

    @app.cli.command("backfill")
    @click.argument("table")
    @click.option("--set", "assignment", required=True, help="SQL, e.g. 'headline = title'.")
    @click.option("--where", "pending", required=True, help="SQL, e.g. 'headline IS NULL'.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
    @click.option("--max-seconds", type=click.FloatRange(min=0), default=600, show_default=True)
    @click.option("--pause", type=click.FloatRange(min=0), default=0.1, show_default=True,
                  help="Seconds between batches.")  # fmt: skip
    def backfill_command(table, assignment, pending, batch_size, max_seconds, pause) -> None:
        """Fill a new column in batches (the second step of a rename): UPDATE TABLE SET … for
        the rows WHERE … holds, BATCH_SIZE rows per transaction; exit status 3 when stopped by
        --max-seconds with rows left (run it again to go on)."""
        result = backfill(table, assignment, pending, batch_size, max_seconds, pause, click.echo)
        state = "done" if result.finished else "rows left"
        click.echo(
            f"backfill {table}: {result.rows} rows in {result.batches} batches, "
            f"{result.seconds:.1f} s, {state}"
        )
        if not result.finished:
            raise SystemExit(3)

    @app.cli.command("wait-for-services")
    @click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait in total.")
    def wait_for_services_command(timeout: float) -> None:
        """Wait until Postgres and Redis answer (exit status 1 when they do not in time)."""
        if not wait_for_services(timeout=timeout):
            raise click.ClickException("Postgres or Redis did not become ready in time")
        click.echo("services are ready")
