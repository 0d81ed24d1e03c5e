"""Migration 0007 (the directory of immutable ids) carries an existing database over: a
database taken back to 0006 (access policies naming principals by sign-in name, no object
ids, no subscriptions table) comes up again with every principal given a new object id,
every grant kept (now naming the object id), each subscription registered to its vault's
tenant, purge requesters and job creators resolved, and the audit chain intact."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import MetaData, select

from customerkey.config import Settings
from customerkey.errors import Forbidden
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.database import Database, alembic_config
from customerkey.storage.models import PolicyRow, SubscriptionRow
from customerkey.vault.models import OPERATOR

storage = pytest.mark.storage
VAULTS = ("mig-a", "mig-b")


def _downgrade_to_0006(db_url: str) -> None:
    db = Database(db_url)
    try:
        with db.engine.begin() as connection:
            config = alembic_config(db_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
        with db.engine.connect() as connection:
            tables = MetaData()
            tables.reflect(connection, only=["principals", "access_policies"])
            assert "object_id" not in tables.tables["principals"].c
            granted = {
                row.object_id
                for row in connection.execute(select(tables.tables["access_policies"]))
            }
            # back to names, as 0006 stored them
            assert "alice@contoso.com" in granted and EXCHANGE.app_id in granted
    finally:
        db.dispose()


@storage
def test_an_existing_database_keeps_its_grants_and_ownership(db_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    rt = Runtime.open(settings, rng=SystemRng())
    try:
        rt.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
        alice, _ = rt.principals.create(OPERATOR, "alice@contoso.com", tenant="contoso")
        admin, _ = rt.principals.create(
            OPERATOR, "admin@contoso.com", tenant="contoso", roles=["tenant-admin"]
        )
        for region, vault in zip(("eastus", "westus"), VAULTS, strict=True):
            rt.vault.create_vault(
                OPERATOR, vault, subscription="sub-1", region=region, tenant="contoso"
            )
            rt.vault.create_key(
                OPERATOR, vault, "root", kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
            )
            rt.vault.set_access_policy(
                OPERATOR, vault, EXCHANGE.app_id, ["get", "wrapKey", "unwrapKey"]
            )
        rt.vault.set_access_policy(
            OPERATOR, VAULTS[0], "alice@contoso.com", ["wrapKey", "unwrapKey"]
        )
        uris = [f"https://{v}.vault.azure.net/keys/root" for v in VAULTS]
        rt.policies.create(OPERATOR, "contoso", "M-DEP", uris)
        rt.mail.create_mailbox(OPERATOR, "contoso", "alice@contoso.com", policy="M-DEP")
        item = rt.mail.add_message(OPERATOR, "alice@contoso.com", b"Subject: kept\n\nbody\n")
        wrapped = rt.vault.wrap_key(
            alice.actor(), VAULTS[0], "root", None, "RSA-OAEP-256", b"k" * 32
        )
        for vault in VAULTS:
            rt.vault.remove_access_policy(OPERATOR, vault, EXCHANGE.app_id)
        rt.policies.request_purge(
            admin.actor(),
            "contoso",
            "M-DEP",
            reason="r",
            contact="c",
            workload_principal=EXCHANGE.app_id,
        )
        for vault in VAULTS:
            rt.vault.set_access_policy(
                OPERATOR, vault, EXCHANGE.app_id, ["get", "wrapKey", "unwrapKey"]
            )
    finally:
        rt.close()

    _downgrade_to_0006(db_url)

    rt = Runtime.open(settings, rng=SystemRng())
    try:
        carried = rt.principals.get("alice@contoso.com")
        assert carried.object_id and carried.object_id != alice.object_id  # a new id...
        names = {p.sign_in_name: p for p in rt.vault.get_vault(OPERATOR, VAULTS[0]).access_policies}
        assert names["alice@contoso.com"].object_id == carried.object_id  # ...the grant follows
        assert set(names["alice@contoso.com"].key_permissions) == {"wrapKey", "unwrapKey"}
        unwrapped = rt.vault.unwrap_key(
            carried.actor(), VAULTS[0], "root", wrapped.kid.version, "RSA-OAEP-256", wrapped.value
        )
        assert unwrapped.value == b"k" * 32
        # The workload principal's grants are kept too: the mailbox still opens.
        rt.key_cache.clear()
        assert rt.mail.read_item(OPERATOR, "alice@contoso.com", item.id).endswith(b"body\n")
        requester = rt.principals.get("admin@contoso.com").object_id
        with rt.db.transaction() as session:
            owner = session.get(SubscriptionRow, "sub-1")
            assert owner is not None and owner.tenant == "contoso"
            policy = session.scalar(select(PolicyRow).where(PolicyRow.name == "M-DEP"))
            assert policy is not None
            assert policy.purge_requested_by_id == requester
        # Ownership by subscription now holds: another tenant cannot take sub-1.
        rt.tenants.create(OPERATOR, "fabrikam", mail_domain="fabrikam.com")
        with pytest.raises(Forbidden, match="belongs to another tenant"):
            rt.vault.create_vault(
                OPERATOR, "mig-c", subscription="sub-1", region="eastus", tenant="fabrikam"
            )
        verified = rt.audit_log.verify(OPERATOR)
        assert verified.ok, verified.problems
    finally:
        rt.close()
