"""Initial schema: principals, vaults, access policies, keys, key versions, audit records.

Revision ID: 0001
Revises:
Create Date: 2026-12-01 07:09:44.358175
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(length=320), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("vault", sa.String(length=63), nullable=True),
        sa.Column("key", sa.String(length=127), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("hash"),
    )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_records_operation"), ["operation"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_vault"), ["vault"], unique=False)

    op.create_table(
        "principals",
        sa.Column("id", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("secret_hash", sa.String(length=256), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_principals_tenant"), ["tenant"], unique=False)

    op.create_table(
        "vaults",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=63), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("subscription", sa.String(length=128), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("resource_group", sa.String(length=90), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("purge_protection", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scheduled_purge_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "access_policies",
        sa.Column("vault_id", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=320), nullable=False),
        sa.Column("key_permissions", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["vault_id"], ["vaults.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("vault_id", "object_id"),
    )
    op.create_table(
        "keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("vault_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=127), nullable=False),
        sa.Column("name_lower", sa.String(length=127), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scheduled_purge_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotation_policy", sa.JSON(), nullable=True),
        sa.Column("rotation_policy_created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotation_policy_updated", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["vault_id"], ["vaults.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vault_id", "name_lower"),
    )
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_keys_vault_id"), ["vault_id"], unique=False)

    op.create_table(
        "key_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kty", sa.String(length=16), nullable=False),
        sa.Column("key_size", sa.Integer(), nullable=False),
        sa.Column("key_ops", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("exportable", sa.Boolean(), nullable=False),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.Column("public_n", sa.Text(), nullable=False),
        sa.Column("public_e", sa.String(length=16), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("operation_count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_id", "version"),
    )
    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.create_index("ix_key_versions_key_created", ["key_id", "seq"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("key_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_key_versions_key_created")

    op.drop_table("key_versions")
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keys_vault_id"))

    op.drop_table("keys")
    op.drop_table("access_policies")
    op.drop_table("vaults")
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_principals_tenant"))

    op.drop_table("principals")
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_records_vault"))
        batch_op.drop_index(batch_op.f("ix_audit_records_operation"))

    op.drop_table("audit_records")
