"""The directory of immutable ids: principal object ids, principal lifecycle (enabled, token
generation, when each role was granted), tenant-owned subscriptions, scoped audit records,
and object ids for purge requesters and job creators.

An existing database is carried over: every principal gets a random object id; access
policies, which named principals by their sign-in name, are rewritten to name the object id
(grants are kept); each subscription is registered to the tenant of the oldest vault naming
it; purge requests and jobs get their requester's object id where it still exists. Audit
records written before keep no scope (their hashes cover what they had) and stay the
operator's to read. A downgrade keeps the audit records' scope columns, which their hashes
cover.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 06:00:00.000000
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("object_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("role_grants", sa.JSON(), nullable=True))

    principals = sa.table(
        "principals",
        sa.column("id", sa.String),
        sa.column("object_id", sa.String),
        sa.column("roles", sa.JSON),
        sa.column("role_grants", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    names: dict[str, str] = {}
    for name, roles, created in bind.execute(
        sa.select(principals.c.id, principals.c.roles, principals.c.created_at)
    ).all():
        object_id = str(uuid.uuid4())
        names[name] = object_id
        when = created if isinstance(created, datetime) else datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        bind.execute(
            principals.update()
            .where(principals.c.id == name)
            .values(
                object_id=object_id,
                role_grants={role: when.isoformat() for role in (roles or [])},
            )
        )
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.alter_column("object_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.create_unique_constraint("uq_principals_object_id", ["object_id"])

    policies = sa.table(
        "access_policies", sa.column("vault_id", sa.String), sa.column("object_id", sa.String)
    )
    for vault_id, name in bind.execute(sa.select(policies.c.vault_id, policies.c.object_id)).all():
        if name in names:
            bind.execute(
                policies.update()
                .where(policies.c.vault_id == vault_id, policies.c.object_id == name)
                .values(object_id=names[name])
            )

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_subscriptions_tenant", "subscriptions", ["tenant"])
    vaults = sa.table(
        "vaults",
        sa.column("subscription", sa.String),
        sa.column("tenant", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    subscriptions = sa.table(
        "subscriptions",
        sa.column("id", sa.String),
        sa.column("tenant", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    claimed: set[str] = set()
    for subscription, tenant, created in bind.execute(
        sa.select(vaults.c.subscription, vaults.c.tenant, vaults.c.created_at).order_by(
            vaults.c.created_at
        )
    ).all():
        if subscription in claimed:
            continue
        claimed.add(subscription)
        bind.execute(
            subscriptions.insert().values(id=subscription, tenant=tenant, created_at=created)
        )

    # The audit scope columns survive a downgrade (the chain's hashes cover them), so a
    # database that comes back up keeps them.
    if "tenant" not in {c["name"] for c in sa.inspect(bind).get_columns("audit_records")}:
        with op.batch_alter_table("audit_records", schema=None) as batch_op:
            batch_op.add_column(sa.Column("tenant", sa.String(length=128), nullable=True))
            batch_op.add_column(sa.Column("vault_id", sa.String(length=32), nullable=True))
            batch_op.add_column(sa.Column("actor_id", sa.String(length=36), nullable=True))
            batch_op.add_column(sa.Column("subject_id", sa.String(length=36), nullable=True))
            batch_op.create_index("ix_audit_records_tenant", ["tenant"])
            batch_op.create_index("ix_audit_records_vault_id", ["vault_id"])

    for table, column in (
        ("data_encryption_policies", "purge_requested_by_id"),
        ("jobs", "created_by_id"),
    ):
        if column not in {c["name"] for c in sa.inspect(bind).get_columns(table)}:
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.add_column(sa.Column(column, sa.String(length=36), nullable=True))
    for table, name_column, id_column in (
        ("data_encryption_policies", "purge_requested_by", "purge_requested_by_id"),
        ("jobs", "created_by", "created_by_id"),
    ):
        target = sa.table(table, sa.column(name_column, sa.String), sa.column(id_column))
        for name, object_id in names.items():
            bind.execute(
                target.update().where(target.c[name_column] == name).values({id_column: object_id})
            )


def downgrade() -> None:
    # Kept: audit_records' scope columns (the chain's hashes cover them), and the nullable id
    # columns of data_encryption_policies and jobs (on SQLite, dropping a column rebuilds the
    # table, which other tables' foreign keys forbid); an upgrade adds only what is missing.
    op.drop_index("ix_subscriptions_tenant", table_name="subscriptions")
    op.drop_table("subscriptions")
    bind = op.get_bind()
    principals = sa.table(
        "principals", sa.column("id", sa.String), sa.column("object_id", sa.String)
    )
    policies = sa.table("access_policies", sa.column("object_id", sa.String))
    for name, object_id in bind.execute(sa.select(principals.c.id, principals.c.object_id)).all():
        bind.execute(
            policies.update().where(policies.c.object_id == object_id).values(object_id=name)
        )
    with op.batch_alter_table("principals", schema=None) as batch_op:
        batch_op.drop_constraint("uq_principals_object_id", type_="unique")
        batch_op.drop_column("role_grants")
        batch_op.drop_column("token_generation")
        batch_op.drop_column("enabled")
        batch_op.drop_column("object_id")
