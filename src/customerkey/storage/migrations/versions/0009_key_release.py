"""Secure key release: an exportable key version's release policy and the tag binding it and the
``exportable`` flag to the master key (``release_policy``, ``release_tag``; NULL for versions
that are not exportable, which every existing version is), and the installation's release
signing key (``release_signing_keys``, made on first use).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("release_policy", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("release_tag", sa.LargeBinary(), nullable=True))
    op.create_table(
        "release_signing_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("release_signing_keys")
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.drop_column("release_tag")
        batch_op.drop_column("release_policy")
