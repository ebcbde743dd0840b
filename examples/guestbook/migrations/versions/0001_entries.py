"""The entries of the guestbook.

Revision ID: 0001_entries
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_entries"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_entries_created_at", "entries", ["created_at"])


def downgrade():
    op.drop_index("ix_entries_created_at", table_name="entries")
    op.drop_table("entries")
