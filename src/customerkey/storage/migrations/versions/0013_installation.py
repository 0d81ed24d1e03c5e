"""The installation's master key.

``installation`` holds one row naming, by its id, the master key the database's data is sealed
under (``storage.installation``): recorded by the first process to open the database, checked
by every later one, so a host with a master key of its own cannot write to a shared database.
A database upgraded to this revision records the key of the first process that opens it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("master_key_id", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("installation")
