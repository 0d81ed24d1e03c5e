"""Service core: tenants, policies, DEP generations, mailboxes, mailbox keys, items, jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 07:24:36.117891
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=False),
        sa.Column("progress_done", sa.BigInteger(), nullable=False),
        sa.Column("progress_total", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_state_created", ["state", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_target"), ["target"], unique=False)

    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("mail_domain", sa.String(length=253), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mail_domain"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "data_encryption_policies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("name_lower", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("key_uri_1", sa.String(length=512), nullable=False),
        sa.Column("key_uri_2", sa.String(length=512), nullable=False),
        sa.Column("sealed_availability_key", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("purge_reason", sa.Text(), nullable=True),
        sa.Column("purge_contact", sa.String(length=320), nullable=True),
        sa.Column("purge_requested_by", sa.String(length=320), nullable=True),
        sa.Column("purge_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "kind", "name_lower"),
    )
    with op.batch_alter_table("data_encryption_policies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_data_encryption_policies_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "dep_generations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("policy_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("key_uri_1", sa.String(length=512), nullable=False),
        sa.Column("wrapped_1", sa.LargeBinary(), nullable=True),
        sa.Column("key_uri_2", sa.String(length=512), nullable=False),
        sa.Column("wrapped_2", sa.LargeBinary(), nullable=True),
        sa.Column("wrapped_availability", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["data_encryption_policies.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("policy_id", "seq"),
    )
    with op.batch_alter_table("dep_generations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dep_generations_policy_id"), ["policy_id"], unique=False
        )

    op.create_table(
        "mailboxes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("upn", sa.String(length=320), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("policy_id", sa.String(length=36), nullable=True),
        sa.Column("current_key_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["data_encryption_policies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("upn"),
    )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailboxes_policy_id"), ["policy_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_mailboxes_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "mailbox_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("mailbox_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("generation_id", sa.String(length=36), nullable=True),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["dep_generations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mailbox_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailbox_keys_generation_id"), ["generation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_mailbox_keys_mailbox_id"), ["mailbox_id"], unique=False
        )

    op.create_table(
        "mail_items",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("mailbox_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("folder", sa.String(length=256), nullable=False),
        sa.Column("key_id", sa.String(length=36), nullable=False),
        sa.Column("blob", sa.String(length=256), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sealed_size", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["mailbox_keys.id"],
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mail_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_items_mailbox_id"), ["mailbox_id"], unique=False)
        batch_op.create_index("ix_mail_items_mailbox_key", ["mailbox_id", "key_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("mail_items", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_items_mailbox_key")
        batch_op.drop_index(batch_op.f("ix_mail_items_mailbox_id"))

    op.drop_table("mail_items")
    with op.batch_alter_table("mailbox_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_keys_mailbox_id"))
        batch_op.drop_index(batch_op.f("ix_mailbox_keys_generation_id"))

    op.drop_table("mailbox_keys")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailboxes_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_mailboxes_policy_id"))

    op.drop_table("mailboxes")
    with op.batch_alter_table("dep_generations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dep_generations_policy_id"))

    op.drop_table("dep_generations")
    with op.batch_alter_table("data_encryption_policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_encryption_policies_tenant_id"))

    op.drop_table("data_encryption_policies")
    op.drop_table("workers")
    op.drop_table("tenants")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_target"))
        batch_op.drop_index("ix_jobs_state_created")

    op.drop_table("jobs")
