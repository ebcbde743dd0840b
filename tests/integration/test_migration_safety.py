"""Migrations that never take the site down: linted by squawk, and bounded in how long they wait
for the live site's locks (a real Postgres, a real long transaction)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg2
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from app import MIGRATIONS_DIR, create_app
from app.extensions import db
from app.schema import SchemaUpgradeBlockedError, upgrade_schema
from tools.lint_migrations import lint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"


def real_head() -> str:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def migrations_with(tmp_path: Path, *fixtures: str) -> Path:
    """A copy of migrations/ with fixture revisions on top of the real head (the first one's
    down_revision is "HEAD"; the others name their parents)."""
    directory = tmp_path / "migrations"
    if not directory.exists():
        shutil.copytree(MIGRATIONS_DIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
    for fixture in fixtures:
        source = (FIXTURES / fixture).read_text().replace('"HEAD"', f'"{real_head()}"')
        (directory / "versions" / fixture).write_text(source)
    return directory


def test_every_revision_passes_squawk():
    verdicts = lint()
    assert verdicts, "no revision was linted"
    rejected = [f"{v.path}:\n{v.report}" for v in verdicts if not v.ok]
    assert not rejected, "\n\n".join(rejected)


def test_squawk_rejects_a_revision_that_breaks_the_release_still_serving(tmp_path):
    verdicts = {v.path.name: v for v in lint(migrations_with(tmp_path, "rename_column.py"))}
    verdict = verdicts["rename_column.py"]
    assert not verdict.ok
    assert "renaming-column" in verdict.report and "rename_column.py" in verdict.report
    assert all(v.ok for name, v in verdicts.items() if name != "rename_column.py")


def test_a_statement_accepted_with_a_reason_passes_squawk(tmp_path):
    verdicts = {v.path.name: v for v in lint(migrations_with(tmp_path, "drop_column_accepted.py"))}
    assert verdicts["drop_column_accepted.py"].ok, verdicts["drop_column_accepted.py"].report


@pytest.fixture
def scratch_env(postgres, base_env):
    """A database of its own, so the schema changes here never reach other tests."""
    postgres.create_database("flaskstack_migration_safety")
    url = base_env["DATABASE_URL"].rsplit("/", 1)[0] + "/flaskstack_migration_safety"
    return {**base_env, "DATABASE_URL": url, "MIGRATION_LOCK_TIMEOUT": "1"}


def hold_a_table_lock(url: str, until: threading.Event, ready: threading.Event) -> None:
    """What a slow report of the live site does: a transaction that has read posts (ACCESS
    SHARE, held until it ends) and stays open."""
    connection = psycopg2.connect(url, application_name="slow-report")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM posts")
            ready.set()
            until.wait(60)
        connection.rollback()
    finally:
        connection.close()


def test_a_migration_behind_a_long_transaction_retries_then_names_it_and_applies_nothing(
    scratch_env, tmp_path
):
    directory = str(migrations_with(tmp_path, "add_nullable_column.py"))
    app = create_app(scratch_env)
    with app.app_context():
        upgrade_schema(attempts=1, first_delay=0, directory=str(MIGRATIONS_DIR))
        db.engine.dispose()

        release, ready = threading.Event(), threading.Event()
        holder = threading.Thread(
            target=hold_a_table_lock, args=(scratch_env["DATABASE_URL"], release, ready)
        )
        holder.start()
        try:
            assert ready.wait(10)
            log = []
            with pytest.raises(SchemaUpgradeBlockedError) as blocked:
                upgrade_schema(attempts=2, first_delay=0.2, directory=directory, log=log.append)
        finally:
            release.set()
            holder.join()
        message = str(blocked.value)
        assert "slow-report" in message and "SELECT count(*) FROM posts" in message, message
        assert len(log) == 1 and "retrying" in log[0], log
        db.engine.dispose()
        with db.engine.connect() as connection:
            version = connection.scalar(text("SELECT version_num FROM alembic_version"))
            columns = {c["name"] for c in inspect(connection).get_columns("posts")}
        assert version == real_head() and "summary" not in columns

        # The transaction has ended: the same upgrade goes through at the first attempt.
        assert upgrade_schema(attempts=2, first_delay=0.2, directory=directory) == 1
        with db.engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("posts")}
        assert "summary" in columns

        # make rollback: the previous release, which lacks that revision, leaves the schema be.
        log = []
        assert upgrade_schema(attempts=1, first_delay=0, log=log.append) == 0
        assert "from a later release" in log[0] and "f1x7re000003" in log[0], log
        db.engine.dispose()


def test_backfill_fills_a_new_column_in_bounded_batches_and_resumes(scratch_env, tmp_path):
    directory = str(migrations_with(tmp_path, "add_nullable_column.py"))
    app = create_app(scratch_env)
    runner = app.test_cli_runner()
    with app.app_context():
        upgrade_schema(attempts=1, first_delay=0, directory=directory)
    assert runner.invoke(args=["seed", "--users", "1", "--posts", "10"]).exit_code == 0

    backfill = ["backfill", "posts", "--set", "summary = left(body, 12)",
                "--where", "summary IS NULL", "--batch-size", "4", "--pause", "0"]  # fmt: skip
    stopped = runner.invoke(args=[*backfill, "--max-seconds", "0"])
    assert stopped.exit_code == 3, stopped.output
    assert "4 rows in 1 batches" in stopped.output and "rows left" in stopped.output

    finished = runner.invoke(args=backfill)
    assert finished.exit_code == 0, finished.output
    assert "6 rows in 2 batches" in finished.output and "done" in finished.output
    with app.app_context():
        with db.engine.connect() as connection:
            summaries = connection.scalars(text("SELECT summary FROM posts ORDER BY id")).all()
        db.engine.dispose()
    assert summaries and all(s == "This is demo" for s in summaries), summaries


def test_the_fault_suites_migrations_pass_squawk_and_apply(scratch_env, tmp_path):
    directory = migrations_with(tmp_path, "expand_release.py", "heavy_index.py")
    verdicts = {v.path.name: v for v in lint(directory)}
    for fixture in ("expand_release.py", "heavy_index.py"):
        assert verdicts[fixture].ok, verdicts[fixture].report
    app = create_app(scratch_env)
    with app.app_context():
        assert upgrade_schema(attempts=1, first_delay=0, directory=str(directory)) == 1
        with db.engine.connect() as connection:
            valid = connection.scalars(
                text("SELECT indisvalid FROM pg_index WHERE indexrelid IN "
                     "(CAST(:one AS regclass), CAST(:other AS regclass))"),
                {"one": "ix_posts_author_created", "other": "ix_comments_author_created"},
            ).all()  # fmt: skip
        db.engine.dispose()
    assert valid == [True, True]


# What each release of the rename reads and writes (the worked example in the README).
RELEASE_SQL = {
    0: ["SELECT title FROM posts",
        "INSERT INTO posts (author_id, title, body, created_at) "
        "SELECT id, 'by release 0', 'body', now() FROM users LIMIT 1"],
    1: ["SELECT title FROM posts",
        "INSERT INTO posts (author_id, title, headline, body, created_at) "
        "SELECT id, 'by release 1', 'by release 1', 'body', now() FROM users LIMIT 1"],
    2: ["SELECT headline FROM posts",
        "INSERT INTO posts (author_id, title, headline, body, created_at) "
        "SELECT id, 'by release 2', 'by release 2', 'body', now() FROM users LIMIT 1"],
    3: ["SELECT headline FROM posts",
        "INSERT INTO posts (author_id, headline, body, created_at) "
        "SELECT id, 'by release 3', 'body', now() FROM users LIMIT 1"],
}  # fmt: skip


def serve(release: int) -> None:
    """The statements of a release, as it serves: they must work on the schema as it is."""
    with db.engine.begin() as connection:
        for statement in RELEASE_SQL[release]:
            connection.execute(text(statement))


def test_a_rename_in_releases_never_breaks_the_release_still_serving(scratch_env, tmp_path):
    app = create_app(scratch_env)
    runner = app.test_cli_runner()
    with app.app_context():
        upgrade_schema(attempts=1, first_delay=0, directory=str(MIGRATIONS_DIR))
    assert runner.invoke(args=["seed", "--users", "1", "--posts", "5"]).exit_code == 0

    steps = [  # (the release whose migration runs, its revision file or None)
        (1, "rename_1_add_headline.py"),
        (2, None),
        (3, "rename_3_title_optional.py"),
        (4, "rename_4_drop_title.py"),
    ]
    with app.app_context():
        for release, fixture in steps:
            if fixture:
                directory = migrations_with(tmp_path, fixture)
                verdicts = {v.path.name: v for v in lint(directory)}
                assert verdicts[fixture].ok, verdicts[fixture].report
                upgrade_schema(attempts=1, first_delay=0, directory=str(directory))
            serve(release - 1)  # the previous release, still serving during the switch
            if release == 1:
                backfill = runner.invoke(args=[
                    "backfill", "posts", "--set", "headline = title",
                    "--where", "headline IS NULL", "--pause", "0",
                ])  # fmt: skip
                assert backfill.exit_code == 0, backfill.output
            if release in RELEASE_SQL:
                serve(release)
        with db.engine.connect() as connection:
            headlines = connection.scalars(text("SELECT headline FROM posts")).all()
            columns = {c["name"] for c in inspect(connection).get_columns("posts")}
        db.engine.dispose()
    assert "title" not in columns
    # 5 seeded posts and 7 written by the releases as they served; none lost its headline.
    assert len(headlines) == 5 + 7 and all(headlines), headlines


def test_a_concurrent_index_build_that_failed_before_is_rebuilt(scratch_env, tmp_path):
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index behind; the re-run drops it
    and builds the index the revision asks for, instead of taking the leftover for done."""
    app = create_app(scratch_env)
    runner = app.test_cli_runner()
    with app.app_context():
        upgrade_schema(attempts=1, first_delay=0, directory=str(MIGRATIONS_DIR))
    assert runner.invoke(args=["seed", "--users", "1", "--posts", "2"]).exit_code == 0
    with app.app_context():
        with db.engine.connect() as connection:
            connection.execute(text("UPDATE posts SET title = 'same'"))
            connection.commit()
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            with pytest.raises(IntegrityError):  # a duplicate: the build fails half-way
                autocommit.execute(text(
                    "CREATE UNIQUE INDEX CONCURRENTLY ix_posts_author_created ON posts (title)"
                ))  # fmt: skip
        directory = migrations_with(tmp_path, "expand_release.py")
        assert upgrade_schema(attempts=1, first_delay=0, directory=str(directory)) == 1
        with db.engine.connect() as connection:
            valid, definition = connection.execute(text(
                "SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index "
                "WHERE indexrelid = to_regclass('ix_posts_author_created')"
            )).one()  # fmt: skip
        db.engine.dispose()
    assert valid and "author_id, created_at" in definition, definition
