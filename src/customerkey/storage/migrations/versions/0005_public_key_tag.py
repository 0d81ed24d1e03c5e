"""Key versions: the public-key tag binding the public key to the master key (NULL for older
versions until the start-up backfill has checked them against their sealed private keys).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 09:41:37.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_tag", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.drop_column("public_tag")
