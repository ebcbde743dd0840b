"""The Alembic history: one head, and it matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from app import MIGRATIONS_DIR
from app.extensions import db


def test_the_migration_history_has_exactly_one_head():
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, (
        f"the migration history has {len(heads)} heads ({', '.join(heads)}), from two branches "
        f"that each added a revision; merge them with:\n"
        f"  flask --app app db merge -m 'merge heads' {' '.join(heads)}"
    )


def test_the_migrated_schema_matches_the_models(app):
    with app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
    assert differences == [], "run `flask --app app db migrate` and commit the revision"
