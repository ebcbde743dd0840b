"""`flask` commands, run with an app context and no server."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from app.extensions import db
from app.models import Comment, Post, User, utcnow


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_create_admin_makes_a_user_who_can_see_deleted_items(app, runner, auth, client):
    result = runner.invoke(
        args=["create-admin", "root", "root@example.org"],
        env={"ADMIN_PASSWORD": "a long admin password"},
    )
    assert result.exit_code == 0, result.output
    assert "admin root is ready" in result.output
    auth.login("root", "a long admin password")
    assert client.get("/admin/deleted").status_code == 200

    # Running it again resets the password instead of failing.
    result = runner.invoke(
        args=["create-admin", "root", "root@example.org"],
        env={"ADMIN_PASSWORD": "another long password"},
    )
    assert result.exit_code == 0
    assert count(app, User) == 1


def test_seed_adds_demo_users_posts_and_comments(app, runner, client):
    result = runner.invoke(args=["seed", "--users", "3", "--posts", "12", "--comments", "2"])
    assert result.exit_code == 0, result.output
    assert (count(app, User), count(app, Post), count(app, Comment)) == (3, 12, 24)
    assert "Demo post 12" in client.get("/").get_data(as_text=True)
    assert runner.invoke(args=["seed", "--users", "1", "--posts", "1"]).exit_code == 0
    assert count(app, User) == 4


def test_purge_deleted_removes_only_old_soft_deleted_rows(app, runner):
    runner.invoke(args=["seed", "--users", "2", "--posts", "4", "--comments", "1"])
    long_ago = utcnow() - timedelta(days=40)
    with app.app_context():
        db.session.execute(update(Post).where(Post.id == 1).values(deleted_at=long_ago))
        db.session.execute(update(Post).where(Post.id == 2).values(deleted_at=utcnow()))
        db.session.execute(update(Comment).where(Comment.post_id == 3).values(deleted_at=long_ago))
        db.session.commit()

    result = runner.invoke(args=["purge-deleted", "--days", "30"])
    assert result.exit_code == 0, result.output
    assert "purged 1 posts and 2 comments" in result.output
    with app.app_context():
        assert set(db.session.scalars(select(Post.id))) == {2, 3, 4}
        assert set(db.session.scalars(select(Comment.post_id))) == {2, 4}

    assert runner.invoke(args=["purge-deleted"]).exit_code != 0  # --days is required


def test_create_token_prints_a_working_api_token(app, runner, client, make_user):
    make_user("alice")
    result = runner.invoke(args=["create-token", "alice"])
    assert result.exit_code == 0
    token = result.output.strip()
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert runner.invoke(args=["create-token", "ghost"]).exit_code == 1


def test_wait_for_services_succeeds_when_both_answer(runner):
    result = runner.invoke(args=["wait-for-services", "--timeout", "5"])
    assert result.exit_code == 0
    assert "services are ready" in result.output
