"""Schema upgrades that never hold the live site hostage: `flask upgrade-schema`.

migrations/env.py bounds every migration's lock wait (MIGRATION_LOCK_TIMEOUT) and runs each
revision in its own transaction. Here a revision that timed out waiting for a lock is retried
with backoff, since the transaction in its way usually ends soon; when it does not, the upgrade
gives up and names the sessions that held locks the whole time, with their queries.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import flask_migrate
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from flask import current_app
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.extensions import db

LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout

# Sessions of this database in a transaction older than the lock timeout that hold a lock on a
# table: what a migration's ACCESS EXCLUSIVE lock (or a SHARE lock) waited for.
LOCK_HOLDERS = text("""
    SELECT DISTINCT a.pid, a.usename, a.application_name, a.state,
           extract(epoch FROM now() - a.xact_start)::int AS seconds_in_transaction,
           left(regexp_replace(a.query, '\\s+', ' ', 'g'), 200) AS query
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND a.pid <> pg_backend_pid()
      AND a.xact_start < now() - make_interval(secs => :lock_timeout)
    ORDER BY seconds_in_transaction DESC
""")


def accept_lint(rule: str, reason: str) -> None:
    """In a revision, right before a statement the migration linter rejects: accept it on
    purpose, saying why. Emits squawk's ignore comment into the rendered SQL; online, nothing."""
    from alembic import op

    context = op.get_context()
    if context.as_sql:
        # Straight onto the line above the statement (static_output would add a blank line,
        # and squawk's ignore covers only the next line).
        context.impl.output_buffer.write(f"-- squawk-ignore {rule} -- {reason}\n")


def create_index_concurrently(name: str, table: str, columns: list[str], **options) -> None:
    """In a revision: build an index without blocking writes, re-runnable. CONCURRENTLY cannot
    run in a transaction, so a build that failed (a lock timeout, a duplicate) is not rolled
    back: it leaves an INVALID index that IF NOT EXISTS would then take for done. Such a
    leftover is dropped first."""
    from alembic import op

    context = op.get_context()
    with context.autocommit_block():
        if not context.as_sql:
            invalid = op.get_bind().scalar(
                text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                {"name": name},
            )
            if invalid:
                op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(
            name, table, columns, postgresql_concurrently=True, if_not_exists=True, **options
        )


class SchemaUpgradeBlockedError(RuntimeError):
    """The upgrade waited for locks in every attempt; the message names who held them."""


def is_lock_timeout(error: OperationalError) -> bool:
    return getattr(error.orig, "pgcode", None) == LOCK_NOT_AVAILABLE


def lock_holders() -> list[str]:
    """One line per session that has held a table lock longer than the lock timeout."""
    with db.engine.connect() as connection:
        rows = connection.execute(
            LOCK_HOLDERS, {"lock_timeout": current_app.config["MIGRATION_LOCK_TIMEOUT"]}
        ).all()
    return [
        f"pid {r.pid} ({r.usename}, {r.application_name or 'no application name'}, {r.state}, "
        f"in a transaction for {r.seconds_in_transaction} s): {r.query}"
        for r in rows
    ]


def revisions_unknown_here(directory: str | None) -> list[str]:
    """The database's current revisions that this release's migrations do not contain."""
    config = current_app.extensions["migrate"].migrate.get_config(directory)
    scripts = ScriptDirectory.from_config(config)
    with db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    unknown = []
    for revision in current:
        try:
            scripts.get_revision(revision)
        except CommandError:  # "No such revision"
            unknown.append(revision)
    return unknown


def upgrade_schema(
    attempts: int,
    first_delay: float,
    directory: str | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Apply the pending revisions (of `directory`, default the app's migrations); returns how
    many attempts it took, 0 when the database is ahead of this release."""
    ahead = revisions_unknown_here(directory)
    if ahead:
        # A rollback, or a restore, put an older release on a schema a later release expanded:
        # expand-only migrations are what keeps it working there, so there is nothing to do.
        log(f"the database is at revision {', '.join(ahead)}, from a later release than this "
            "one: left as it is (the previous release runs on the expanded schema)")  # fmt: skip
        return 0
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            flask_migrate.upgrade(directory=directory)
            return attempt
        except OperationalError as error:
            if not is_lock_timeout(error):
                raise
            holders = lock_holders()
            if attempt >= attempts:
                raise SchemaUpgradeBlockedError(
                    f"the migration waited for a lock in all {attempts} attempts and gave up; "
                    "no revision was left half-applied. Held by:\n  "
                    + ("\n  ".join(holders) or "(nobody any more: retry the deploy)")
                ) from error
            log(
                f"attempt {attempt}/{attempts}: a migration waited "
                f"{current_app.config['MIGRATION_LOCK_TIMEOUT']} s for a lock; "
                f"retrying in {delay:.1f} s. Held by: {'; '.join(holders) or 'nobody now'}"
            )
            time.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret
            delay *= 2


IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass
class BackfillResult:
    rows: int
    batches: int
    seconds: float
    finished: bool  # False: stopped by max_seconds with rows left; run it again to go on


def backfill(
    table: str,
    assignment: str,
    pending: str,
    batch_size: int,
    max_seconds: float,
    pause: float,
    log: Callable[[str], None] = print,
) -> BackfillResult:
    """`UPDATE table SET assignment` for the rows where `pending` holds, a batch of at most
    batch_size rows (by id) per transaction, each under the migration lock and statement
    timeouts, with a pause between batches so the live site's queries get the table in between.
    Stops when no row is pending, or after max_seconds (resumable: `pending` says what is left).

    `assignment` and `pending` are SQL written by the operator or a release's recipe, never
    user input; the table name is checked."""
    if not IDENTIFIER.match(table):
        raise ValueError(f"not a plain table name: {table!r}")
    settings = current_app.config
    batch = text(
        f"WITH batch AS (SELECT id FROM {table} WHERE {pending} "  # noqa: S608 - operator SQL
        f"ORDER BY id LIMIT :batch_size FOR UPDATE) "
        f"UPDATE {table} AS target SET {assignment} FROM batch WHERE target.id = batch.id"
    )
    started = time.monotonic()
    rows = batches = 0
    while True:
        with db.engine.begin() as connection:
            connection.execute(
                text("SELECT set_config('lock_timeout', :lock, true), "
                     "set_config('statement_timeout', :statement, true)"),
                {"lock": f"{settings['MIGRATION_LOCK_TIMEOUT']}s",
                 "statement": f"{settings['MIGRATION_STATEMENT_TIMEOUT']}s"},
            )  # fmt: skip
            done = connection.execute(batch, {"batch_size": batch_size}).rowcount
        rows += done
        batches += 1 if done else 0
        elapsed = time.monotonic() - started
        if done == 0:
            return BackfillResult(rows, batches, elapsed, finished=True)
        log(f"batch {batches}: {done} rows ({rows} in {elapsed:.1f} s)")
        if elapsed >= max_seconds:
            return BackfillResult(rows, batches, elapsed, finished=False)
        time.sleep(pause)
