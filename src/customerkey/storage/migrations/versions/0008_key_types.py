"""Key versions of every Key Vault key type: the EC curve and public point (``crv``,
``public_x``, ``public_y``; NULL for RSA and oct-HSM versions). Existing versions are RSA and
keep what they have.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crv", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("public_x", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("public_y", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.drop_column("public_y")
        batch_op.drop_column("public_x")
        batch_op.drop_column("crv")
