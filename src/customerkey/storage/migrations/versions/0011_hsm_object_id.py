"""Key versions held in an HSM (``vault.hsm``): ``hsm_object_id`` names the version's token
object (its PKCS#11 ``CKA_ID``, hex); NULL for every software version, which is every version
made before this migration.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hsm_object_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.drop_column("hsm_object_id")
