"""The revocation log: one row per narrowing of vault access, appended in the same transaction
as the change, followed by every running process to drop its cached DEP keys
(``customerkey.storage.revocations``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 10:05:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("vault", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=127), nullable=False),
        sa.Column("change", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revocations_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revocations_created_at"))
    op.drop_table("revocations")
