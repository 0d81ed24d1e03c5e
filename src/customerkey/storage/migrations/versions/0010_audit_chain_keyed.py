"""The keyed audit chain: each audit record says how its hash was made (``chain``: 0, plain
SHA-256, which every existing record is and stays; 1, HMAC-SHA256 under a key derived from the
master key, which every record written from now on is). See ``customerkey.audit.chain``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-20 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("chain", sa.SmallInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.drop_column("chain")
