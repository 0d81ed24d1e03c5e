"""DEP key generations: the key check value of the DEP key (NULL for older generations).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:22:11.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dep_generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_check", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dep_generations", schema=None) as batch_op:
        batch_op.drop_column("key_check")
