"""Workers on many hosts and staged mail imports.

``workers`` gains the rest of a worker's identity, ``boot_id`` (the kernel's boot id) and
``pid_namespace`` (where its pid means something), and ``heartbeat_at``, which the worker
renews while it lives (``jobs.heartbeats``); rows written before this migration keep NULL and
are judged by their jobs' leases alone. ``mail_import_stagings`` records the mail stores staged
into the blob store for an import (``workloads.mail.staging``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 00:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("boot_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("pid_namespace", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "mail_import_stagings",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("mailbox_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("chunk_starts", sa.JSON(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mail_import_stagings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mail_import_stagings_mailbox_id"), ["mailbox_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mail_import_stagings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_import_stagings_mailbox_id"))
    op.drop_table("mail_import_stagings")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("pid_namespace")
        batch_op.drop_column("boot_id")
