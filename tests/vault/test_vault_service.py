"""The key vault service against a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.hashes import SHA256
from sqlalchemy import select, update

from customerkey.clock import FrozenClock
from customerkey.crypto.rsa import generate_rsa_key, public_key_from_jwk
from customerkey.errors import (
    BadParameter,
    Conflict,
    Forbidden,
    InvalidBackup,
    KeyNotFound,
    KeyNotUsable,
    PrincipalNotFound,
    PurgeProtected,
    VaultNotFound,
)
from customerkey.runtime import Runtime
from customerkey.storage.models import AuditRow, KeyVersionRow
from customerkey.vault.models import OPERATOR, Actor

pytestmark = [pytest.mark.storage, pytest.mark.protectors]

VAULT = "Contoso-O365EX-NA-VaultA1"  # 25 characters, as in the seed document
KEY = "Contoso-O365EX-NA-VaultA1-Key001"


def _user(rt: Runtime, upn: str, *, roles: tuple[str, ...] = ()) -> Actor:
    principal, _ = rt.principals.create(OPERATOR, upn, tenant="contoso", roles=roles)
    return principal.actor()


def _vault(rt: Runtime, name: str = VAULT, **kw: object) -> None:
    rt.vault.create_vault(OPERATOR, name, subscription="sub-1", region="eastus", **kw)  # type: ignore[arg-type]


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(SHA256()), algorithm=SHA256(), label=None)


# ---------------------------------------------------------------- vaults


def test_vault_name_rules(runtime: Runtime) -> None:
    for bad in ("ab", "1abc", "a" * 64, "abc-", "ab--cd", "ab_cd", "ab.cd"):
        with pytest.raises(BadParameter):
            _vault(runtime, bad)
    _vault(runtime, "a" * 63)
    _vault(runtime, VAULT)
    assert runtime.vault.get_vault(OPERATOR, VAULT.upper()).name == VAULT.lower()
    with pytest.raises(Conflict):
        _vault(runtime, VAULT.lower())


def test_vault_retention_bounds_and_recovery_level(runtime: Runtime) -> None:
    for bad in (6, 91, 0):
        with pytest.raises(BadParameter, match="between 7 and 90"):
            _vault(runtime, retention_days=bad)
    _vault(runtime, "vault-seven", retention_days=7, purge_protection=True)
    _vault(runtime, "vault-ninety")
    assert runtime.vault.get_vault(OPERATOR, "vault-seven").recovery_level == (
        "CustomizedRecoverable"
    )
    assert runtime.vault.get_vault(OPERATOR, "vault-ninety").recovery_level == (
        "Recoverable+Purgeable"
    )
    assert runtime.vault.list_vaults(OPERATOR)[0].soft_delete_enabled


def test_creator_gets_full_key_permissions(runtime: Runtime) -> None:
    alice = _user(runtime, "alice@contoso.com")
    vault = runtime.vault.create_vault(alice, VAULT, subscription="s", region="eastus")
    (policy,) = vault.access_policies
    assert (policy.object_id, policy.sign_in_name) == (alice.object_id, "alice@contoso.com")
    assert "purge" in policy.key_permissions and "wrapKey" in policy.key_permissions
    assert len(policy.key_permissions) == 20


def test_vault_soft_delete_recover_purge(runtime: Runtime, clock: FrozenClock) -> None:
    _vault(runtime, purge_protection=True, retention_days=7)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    deleted = runtime.vault.delete_vault(OPERATOR, VAULT)
    assert deleted.scheduled_purge_at == deleted.deleted_at + timedelta(days=7)  # type: ignore[operator]
    with pytest.raises(VaultNotFound):
        runtime.vault.get_key(OPERATOR, VAULT, KEY)
    with pytest.raises(Conflict, match="soft-deleted"):
        _vault(runtime)
    assert [v.name for v in runtime.vault.list_vaults(OPERATOR, deleted=True)] == [VAULT.lower()]
    runtime.vault.recover_vault(OPERATOR, VAULT)
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY).id.name == KEY
    runtime.vault.delete_vault(OPERATOR, VAULT)
    with pytest.raises(PurgeProtected):
        runtime.vault.purge_vault(OPERATOR, VAULT)
    clock.advance(timedelta(days=7))
    runtime.vault.purge_vault(OPERATOR, VAULT)
    assert runtime.vault.list_vaults(OPERATOR, deleted=True) == []
    _vault(runtime)  # the name is free again


def test_vault_auto_purge_on_tick(runtime: Runtime, clock: FrozenClock) -> None:
    _vault(runtime, retention_days=7)
    runtime.vault.delete_vault(OPERATOR, VAULT)
    clock.advance(timedelta(days=6))
    assert runtime.vault.tick(OPERATOR).purged_vaults == ()
    clock.advance(timedelta(days=1))
    assert runtime.vault.tick(OPERATOR).purged_vaults == (VAULT.lower(),)


# ---------------------------------------------------------------- keys


def test_create_same_name_adds_versions(runtime: Runtime) -> None:
    _vault(runtime)
    first = runtime.vault.create_key(
        OPERATOR, VAULT, KEY, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
    )
    second = runtime.vault.create_key(
        OPERATOR, VAULT, KEY, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
    )
    assert first.id.version != second.id.version
    assert len(first.id.version) == 32 and int(first.id.version, 16) >= 0
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY).id.version == second.id.version
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY, first.id.version).n == first.n
    versions = runtime.vault.list_versions(OPERATOR, VAULT, KEY)
    assert [v.id.version for v in versions] == [first.id.version, second.id.version]
    assert [k.id.name for k in runtime.vault.list_keys(OPERATOR, VAULT)] == [KEY]
    assert first.kty == "RSA-HSM" and first.key_ops == ("wrapKey", "unwrapKey")
    assert first.attributes.exportable is False
    # names are case-insensitive
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY.lower()).id.version == second.id.version


@pytest.mark.parametrize("size", [2048, 3072])
def test_key_sizes(runtime: Runtime, size: int) -> None:
    _vault(runtime)
    assert runtime.vault.create_key(OPERATOR, VAULT, "k", size=size).key_size == size


def test_key_creation_refusals(runtime: Runtime) -> None:
    _vault(runtime)
    with pytest.raises(BadParameter, match="size 1024"):
        runtime.vault.create_key(OPERATOR, VAULT, "k", size=1024)
    with pytest.raises(BadParameter, match="P-192"):
        runtime.vault.create_key(OPERATOR, VAULT, "k", kty="EC", crv="P-192")
    with pytest.raises(BadParameter, match="'frobnicate'"):
        runtime.vault.create_key(OPERATOR, VAULT, "k", key_ops=["frobnicate"])
    with pytest.raises(BadParameter, match="invalid"):
        runtime.vault.create_key(OPERATOR, VAULT, "bad name")
    now = runtime.clock.now()
    with pytest.raises(BadParameter, match="after its not-before"):
        runtime.vault.create_key(OPERATOR, VAULT, "k", not_before=now, expires=now)
    with pytest.raises(VaultNotFound):
        runtime.vault.create_key(OPERATOR, "no-such-vault", "k")
    assert runtime.vault.list_keys(OPERATOR, VAULT) == []


def test_update_attributes_ops_tags(runtime: Runtime, clock: FrozenClock) -> None:
    _vault(runtime)
    bundle = runtime.vault.create_key(OPERATOR, VAULT, KEY, tags={"owner": "sec"})
    clock.advance(60)
    exp = clock.now() + timedelta(days=365)
    updated = runtime.vault.update_key(
        OPERATOR,
        VAULT,
        KEY,
        bundle.id.version,
        enabled=False,
        expires=exp,
        key_ops=["wrapKey"],
        tags={"owner": "ops"},
    )
    assert updated.attributes.enabled is False
    assert updated.attributes.expires == exp
    assert updated.key_ops == ("wrapKey",)
    assert updated.tags == {"owner": "ops"}
    assert updated.attributes.updated > updated.attributes.created


def _wrap(rt: Runtime, version: str | None = None, actor: Actor = OPERATOR) -> bytes:
    return rt.vault.wrap_key(actor, VAULT, KEY, version, "RSA-OAEP-256", os.urandom(32)).value


def test_wrap_unwrap_both_algorithms_and_public_key_interop(runtime: Runtime) -> None:
    _vault(runtime)
    bundle = runtime.vault.create_key(OPERATOR, VAULT, KEY, key_ops=["wrapKey", "unwrapKey"])
    secret = os.urandom(32)
    for alg in ("RSA-OAEP-256", "RSA-OAEP"):
        wrapped = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, alg, secret)
        assert wrapped.kid == bundle.id
        assert (
            runtime.vault.unwrap_key(
                OPERATOR, VAULT, KEY, bundle.id.version, alg, wrapped.value
            ).value
            == secret
        )
    # material wrapped locally with the published public key unwraps in the vault
    public = public_key_from_jwk({"kty": "RSA", "n": bundle.n, "e": bundle.e})
    local = public.encrypt(secret, _oaep())
    assert (
        runtime.vault.unwrap_key(OPERATOR, VAULT, KEY, None, "RSA-OAEP-256", local).value == secret
    )
    with pytest.raises(BadParameter, match="Algorithm 'RSA-OAEP-512'"):
        runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, "RSA-OAEP-512", secret)
    legacy = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, "RSA1_5", secret).value
    assert runtime.vault.unwrap_key(OPERATOR, VAULT, KEY, None, "RSA1_5", legacy).value == secret
    with pytest.raises(BadParameter):
        runtime.vault.unwrap_key(OPERATOR, VAULT, KEY, None, "RSA-OAEP-256", b"\x00" * 256)


def test_old_version_still_unwraps_after_roll(runtime: Runtime) -> None:
    _vault(runtime)
    old = runtime.vault.create_key(OPERATOR, VAULT, KEY)
    secret = os.urandom(32)
    wrapped = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, "RSA-OAEP-256", secret)
    runtime.vault.rotate_key(OPERATOR, VAULT, KEY)
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY).id.version != old.id.version
    assert (
        runtime.vault.unwrap_key(
            OPERATOR, VAULT, KEY, old.id.version, "RSA-OAEP-256", wrapped.value
        ).value
        == secret
    )


def test_crypto_refused_when_disabled_early_expired_or_op_missing(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _vault(runtime)
    now = clock.now()
    runtime.vault.create_key(
        OPERATOR,
        VAULT,
        KEY,
        key_ops=["wrapKey", "unwrapKey"],
        not_before=now + timedelta(days=1),
        expires=now + timedelta(days=10),
    )
    with pytest.raises(KeyNotUsable, match="not-before"):
        _wrap(runtime)
    clock.advance(timedelta(days=1))
    _wrap(runtime)
    with pytest.raises(KeyNotUsable, match="not permitted"):
        runtime.vault.crypto(OPERATOR, "encrypt", VAULT, KEY, None, "RSA-OAEP-256", b"x")
    runtime.vault.update_key(OPERATOR, VAULT, KEY, enabled=False)
    with pytest.raises(KeyNotUsable, match="disabled"):
        _wrap(runtime)
    runtime.vault.update_key(OPERATOR, VAULT, KEY, enabled=True)
    clock.advance(timedelta(days=9))
    with pytest.raises(KeyNotUsable, match="expired"):
        _wrap(runtime)
    assert KeyNotUsable.status == 403


def test_usage_counters_per_version(runtime: Runtime) -> None:
    _vault(runtime)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    for _ in range(3):
        _wrap(runtime)
    runtime.vault.rotate_key(OPERATOR, VAULT, KEY)
    _wrap(runtime)
    usage = runtime.vault.key_usage(OPERATOR, VAULT, KEY)
    assert [u.operation_count for u in usage] == [3, 1]
    assert [u.seq for u in usage] == [1, 2]


# ---------------------------------------------------------------- access policies


def test_access_policies_enforced_on_every_call(runtime: Runtime) -> None:
    _vault(runtime)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    bob = _user(runtime, "bob@contoso.com")
    with pytest.raises(Forbidden) as refused:
        runtime.vault.get_key(bob, VAULT, KEY)
    assert refused.value.message == (
        "The user, group or application 'bob@contoso.com' does not have keys get permission "
        "on key vault 'contoso-o365ex-na-vaulta1;location=eastus'."
    )
    runtime.vault.set_access_policy(OPERATOR, VAULT, "Bob@Contoso.com", ["get", "wrapKey"])
    runtime.vault.get_key(bob, VAULT, KEY)
    _wrap(runtime, actor=bob)
    with pytest.raises(Forbidden, match="unwrapKey permission"):
        runtime.vault.unwrap_key(bob, VAULT, KEY, None, "RSA-OAEP-256", b"x" * 256)
    # merge, not replace
    vault = runtime.vault.set_access_policy(OPERATOR, VAULT, "bob@contoso.com", ["unwrapKey"])
    (policy,) = vault.access_policies
    assert policy.key_permissions == ("get", "unwrapKey", "wrapKey") or set(
        policy.key_permissions
    ) == {"get", "wrapKey", "unwrapKey"}
    for denied in (
        lambda: runtime.vault.create_key(bob, VAULT, "other"),
        lambda: runtime.vault.delete_key(bob, VAULT, KEY),
        lambda: runtime.vault.backup_key(bob, VAULT, KEY),
        lambda: runtime.vault.list_keys(bob, VAULT),
        lambda: runtime.vault.rotate_key(bob, VAULT, KEY),
        lambda: runtime.vault.update_key(bob, VAULT, KEY, enabled=False),
        lambda: runtime.vault.set_access_policy(bob, VAULT, "bob@contoso.com", ["all"]),
    ):
        with pytest.raises(Forbidden):
            denied()
    runtime.vault.remove_access_policy(OPERATOR, VAULT, "bob@contoso.com")
    with pytest.raises(Forbidden):
        runtime.vault.get_key(bob, VAULT, KEY)
    with pytest.raises(PrincipalNotFound):
        runtime.vault.remove_access_policy(OPERATOR, VAULT, "bob@contoso.com")
    with pytest.raises(PrincipalNotFound):
        runtime.vault.set_access_policy(OPERATOR, VAULT, "nobody@contoso.com", ["get"])
    with pytest.raises(BadParameter, match="'fly' is not a key permission"):
        runtime.vault.set_access_policy(OPERATOR, VAULT, "bob@contoso.com", ["get", "fly"])


def test_refusals_are_audited_and_change_nothing(runtime: Runtime) -> None:
    _vault(runtime)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    bob = _user(runtime, "bob@contoso.com")
    before = runtime.vault.list_versions(OPERATOR, VAULT, KEY)
    with pytest.raises(Forbidden):
        runtime.vault.create_key(bob, VAULT, KEY)
    assert runtime.vault.list_versions(OPERATOR, VAULT, KEY) == before
    with runtime.db.transaction() as session:
        denied = session.scalars(select(AuditRow).where(AuditRow.result == "denied")).all()
    assert [(d.principal, d.operation) for d in denied] == [("bob@contoso.com", "KeyCreate")]


def test_tenant_admin_manages_vault_other_user_cannot(runtime: Runtime) -> None:
    _vault(runtime, tenant="contoso")
    admin = _user(runtime, "admin@contoso.com", roles=("tenant-admin",))
    eve = _user(runtime, "eve@contoso.com")
    runtime.vault.set_access_policy(admin, VAULT, "eve@contoso.com", ["get"])
    with pytest.raises(Forbidden):
        runtime.vault.set_access_policy(eve, VAULT, "eve@contoso.com", ["all"])
    with pytest.raises(Forbidden):
        runtime.vault.delete_vault(eve, VAULT)


# ---------------------------------------------------------------- soft delete


def test_key_soft_delete_recover_purge(runtime: Runtime, clock: FrozenClock) -> None:
    _vault(runtime, retention_days=30)
    bundle = runtime.vault.create_key(OPERATOR, VAULT, KEY)
    deleted = runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=30)
    with pytest.raises(KeyNotFound):
        runtime.vault.get_key(OPERATOR, VAULT, KEY)
    with pytest.raises(Conflict, match="deleted but recoverable"):
        runtime.vault.create_key(OPERATOR, VAULT, KEY)
    assert runtime.vault.get_deleted_key(OPERATOR, VAULT, KEY).key.id == bundle.id
    assert [d.key.id.name for d in runtime.vault.list_deleted_keys(OPERATOR, VAULT)] == [KEY]
    recovered = runtime.vault.recover_deleted_key(OPERATOR, VAULT, KEY)
    assert recovered.id == bundle.id
    with pytest.raises(KeyNotFound, match="Deleted Key not found"):
        runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    assert runtime.vault.list_deleted_keys(OPERATOR, VAULT) == []
    runtime.vault.create_key(OPERATOR, VAULT, KEY)


def test_purge_needs_permission_and_respects_purge_protection(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _vault(runtime, purge_protection=True, retention_days=7)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    bob = _user(runtime, "bob@contoso.com")
    runtime.vault.set_access_policy(OPERATOR, VAULT, "bob@contoso.com", ["get", "list", "delete"])
    with pytest.raises(Forbidden, match="purge permission"):
        runtime.vault.purge_deleted_key(bob, VAULT, KEY)
    with pytest.raises(PurgeProtected):
        runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    with pytest.raises(PurgeProtected):
        runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    clock.advance(timedelta(seconds=1))
    runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)


def test_deleted_keys_auto_purge_when_retention_passes(
    runtime: Runtime, clock: FrozenClock
) -> None:
    _vault(runtime, retention_days=7, purge_protection=True)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    clock.advance(timedelta(days=6, hours=23))
    assert runtime.vault.tick(OPERATOR).purged_keys == ()
    clock.advance(timedelta(hours=1))
    report = runtime.vault.tick(OPERATOR)
    assert report.purged_keys == (f"{VAULT.lower()}/{KEY}",)
    assert runtime.vault.list_deleted_keys(OPERATOR, VAULT) == []


# ---------------------------------------------------------------- backup / restore


def test_backup_restore_all_versions_after_purge(runtime: Runtime) -> None:
    _vault(runtime)
    v1 = runtime.vault.create_key(
        OPERATOR, VAULT, KEY, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"], tags={"a": "1"}
    )
    secret = os.urandom(32)
    wrapped = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, "RSA-OAEP-256", secret)
    v2 = runtime.vault.create_key(
        OPERATOR, VAULT, KEY, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
    )
    runtime.vault.update_key(OPERATOR, VAULT, KEY, v1.id.version, enabled=False)
    blob = runtime.vault.backup_key(OPERATOR, VAULT, KEY)
    assert secret not in blob
    with pytest.raises(Conflict, match="already exists"):
        runtime.vault.restore_key(OPERATOR, VAULT, blob)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    with pytest.raises(Conflict, match="soft-deleted"):
        runtime.vault.restore_key(OPERATOR, VAULT, blob)
    runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    restored = runtime.vault.restore_key(OPERATOR, VAULT, blob)
    assert restored.id == v2.id
    versions = runtime.vault.list_versions(OPERATOR, VAULT, KEY)
    assert [v.id.version for v in versions] == [v1.id.version, v2.id.version]
    assert versions[0].attributes.enabled is False and versions[0].tags == {"a": "1"}
    assert versions[0].n == v1.n and versions[0].kty == "RSA-HSM"
    runtime.vault.update_key(OPERATOR, VAULT, KEY, v1.id.version, enabled=True)
    assert (
        runtime.vault.unwrap_key(
            OPERATOR, VAULT, KEY, v1.id.version, "RSA-OAEP-256", wrapped.value
        ).value
        == secret
    )


def test_restore_into_other_vault_same_subscription_and_geo_only(runtime: Runtime) -> None:
    _vault(runtime)
    runtime.vault.create_vault(OPERATOR, "same-geo", subscription="sub-1", region="EastUS")
    runtime.vault.create_vault(OPERATOR, "other-geo", subscription="sub-1", region="westeurope")
    runtime.vault.create_vault(OPERATOR, "other-sub", subscription="sub-2", region="eastus")
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    blob = runtime.vault.backup_key(OPERATOR, VAULT, KEY)
    for target in ("other-geo", "other-sub"):
        with pytest.raises(
            BadParameter, match="only be restored into a vault of that subscription"
        ):
            runtime.vault.restore_key(OPERATOR, target, blob)
        assert runtime.vault.list_keys(OPERATOR, target) == []
    restored = runtime.vault.restore_key(OPERATOR, "same-geo", blob)
    assert restored.id.vault == "same-geo"
    _wrap_same = runtime.vault.wrap_key(OPERATOR, "same-geo", KEY, None, "RSA-OAEP", b"k" * 32)
    assert _wrap_same.kid.vault == "same-geo"


def test_tampered_or_truncated_backup_is_rejected_and_changes_nothing(runtime: Runtime) -> None:
    _vault(runtime)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    blob = runtime.vault.backup_key(OPERATOR, VAULT, KEY)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    corrupted = [
        blob[:-1],
        blob[: len(blob) // 2],
        blob[:10],
        b"",
        bytes([blob[0] ^ 1]) + blob[1:],
        blob[:-20] + bytes([blob[-20] ^ 0x80]) + blob[-19:],
        blob[:60] + bytes([blob[60] ^ 0x01]) + blob[61:],
    ]
    for bad in corrupted:
        with pytest.raises((InvalidBackup, BadParameter)):
            runtime.vault.restore_key(OPERATOR, VAULT, bad)
        assert runtime.vault.list_keys(OPERATOR, VAULT) == []
        assert runtime.vault.list_deleted_keys(OPERATOR, VAULT) == []
    runtime.vault.restore_key(OPERATOR, VAULT, blob)


def test_import_rsa_jwk(runtime: Runtime) -> None:
    from customerkey.crypto.rsa import b64url_encode

    _vault(runtime)
    private = generate_rsa_key(2048)
    numbers = private.private_numbers()

    def enc(value: int) -> str:
        return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    jwk = {
        "kty": "RSA",
        "n": enc(numbers.public_numbers.n),
        "e": enc(numbers.public_numbers.e),
        "d": enc(numbers.d),
        "p": enc(numbers.p),
        "q": enc(numbers.q),
        "key_ops": ["wrapKey", "unwrapKey"],
    }
    bundle = runtime.vault.import_key(OPERATOR, VAULT, "imported", jwk, hsm=True)
    assert bundle.kty == "RSA-HSM" and bundle.key_ops == ("wrapKey", "unwrapKey")
    wrapped = private.public_key().encrypt(b"s" * 32, _oaep())
    assert (
        runtime.vault.unwrap_key(OPERATOR, VAULT, "imported", None, "RSA-OAEP-256", wrapped).value
        == b"s" * 32
    )
    with pytest.raises(BadParameter, match="not a valid RSA private key"):
        runtime.vault.import_key(OPERATOR, VAULT, "broken", {**jwk, "d": enc(12345)})
    with pytest.raises(BadParameter):
        runtime.vault.import_key(OPERATOR, VAULT, "ec", {"kty": "EC"})


# ---------------------------------------------------------------- rotation policy


def test_rotation_policy_rules_and_tick(runtime: Runtime, clock: FrozenClock) -> None:
    _vault(runtime)
    first = runtime.vault.create_key(OPERATOR, VAULT, KEY)
    for bad, message in (
        ({"attributes": {"expiryTime": "P27D"}}, "at least 28 days"),
        (
            {
                "lifetimeActions": [
                    {"trigger": {"timeAfterCreate": "P6D"}, "action": {"type": "Rotate"}}
                ]
            },
            "at least 7 days",
        ),
        (
            {
                "lifetimeActions": [
                    {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Rotate"}}
                ]
            },
            "needs attributes.expiryTime",
        ),
        (
            {
                "lifetimeActions": [
                    {
                        "trigger": {"timeAfterCreate": "P30D", "timeBeforeExpiry": "P30D"},
                        "action": {"type": "Rotate"},
                    }
                ],
                "attributes": {"expiryTime": "P1Y"},
            },
            "exactly one trigger",
        ),
        (
            {
                "lifetimeActions": [
                    {"trigger": {"timeAfterCreate": "soon"}, "action": {"type": "Rotate"}}
                ]
            },
            "ISO 8601",
        ),
        (
            {
                "lifetimeActions": [
                    {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Explode"}}
                ]
            },
            "Rotate' or 'Notify",
        ),
    ):
        with pytest.raises(BadParameter, match=message):
            runtime.vault.set_rotation_policy(OPERATOR, VAULT, KEY, bad)
    assert runtime.vault.get_rotation_policy(OPERATOR, VAULT, KEY).lifetime_actions == ()
    policy = runtime.vault.set_rotation_policy(
        OPERATOR,
        VAULT,
        KEY,
        {
            "lifetimeActions": [
                {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}
            ],
            "attributes": {"expiryTime": "P90D"},
        },
    )
    assert policy.expiry_time == "P90D" and policy.lifetime_actions[0].action == "Rotate"
    clock.advance(timedelta(days=29))
    assert runtime.vault.tick(OPERATOR).rotated_keys == ()
    clock.advance(timedelta(days=1))
    assert runtime.vault.tick(OPERATOR).rotated_keys == (f"{VAULT.lower()}/{KEY}",)
    newest = runtime.vault.get_key(OPERATOR, VAULT, KEY)
    assert newest.id.version != first.id.version
    assert newest.attributes.expires == clock.now() + timedelta(days=90)
    assert runtime.vault.tick(OPERATOR).rotated_keys == ()  # newest is fresh


# ---------------------------------------------------------------- at rest and audit


def test_private_key_material_sealed_and_bound_to_identity(runtime: Runtime) -> None:
    _vault(runtime)
    a = runtime.vault.create_key(OPERATOR, VAULT, "key-a")
    b = runtime.vault.create_key(OPERATOR, VAULT, "key-b")
    with runtime.db.transaction() as session:
        rows = {r.version: r for r in session.scalars(select(KeyVersionRow))}
        sealed_a = rows[a.id.version].sealed_private_key
        assert b"PRIVATE" not in sealed_a and sealed_a[:2] != b"\x30\x82"
        # swap the sealed material onto the other key: it must no longer open
        session.execute(
            update(KeyVersionRow)
            .where(KeyVersionRow.version == b.id.version)
            .values(sealed_private_key=sealed_a)
        )
    runtime.vault._private_keys.discard([rows[b.id.version].id])
    with pytest.raises(Exception) as failure:
        runtime.vault.wrap_key(OPERATOR, VAULT, "key-b", None, "RSA-OAEP-256", b"x" * 32)
    assert "Decryption failed" in str(failure.value)


def test_every_change_and_crypto_op_is_audited_and_chain_verifies(runtime: Runtime) -> None:
    _vault(runtime)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    _wrap(runtime)
    runtime.vault.rotate_key(OPERATOR, VAULT, KEY)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    with runtime.db.transaction() as session:
        ops = [r.operation for r in runtime.audit.records(session, vault=VAULT.lower())]
        assert ops == ["VaultPut", "KeyCreate", "KeyWrap", "KeyRotate", "KeyDelete"]
        assert runtime.audit.verify(session).ok


@pytest.mark.parametrize("mutation", ["edit", "delete", "insert", "reorder"])
def test_audit_tamper_kinds(runtime: Runtime, mutation: str) -> None:
    _vault(runtime)
    for i in range(4):
        runtime.vault.create_key(OPERATOR, VAULT, f"k{i}")
    with runtime.db.transaction() as session:
        rows = {r.seq: r for r in session.scalars(select(AuditRow))}
        assert len(rows) >= 5
        if mutation == "edit":
            rows[3].principal = "mallory"
        elif mutation == "delete":
            session.delete(rows[3])
        elif mutation == "reorder":
            a, b = rows[2], rows[3]
            cols = (
                "time",
                "principal",
                "operation",
                "key",
                "version",
                "details",
                "hash",
                "prev_hash",
            )
            va = {c: getattr(a, c) for c in cols}
            vb = {c: getattr(b, c) for c in cols}
            a.hash = "tmp"
            session.flush()
            for c in cols:
                setattr(b, c, va[c])
            session.flush()
            for c in cols:
                setattr(a, c, vb[c])
        elif mutation == "insert":
            session.execute(
                update(AuditRow).where(AuditRow.seq >= 3).values(seq=AuditRow.seq + 1000)
            )
            session.execute(
                update(AuditRow).where(AuditRow.seq >= 1000).values(seq=AuditRow.seq - 999)
            )
            session.expire_all()
            prev = rows[2]
            session.add(
                AuditRow(
                    seq=3,
                    time=prev.time,
                    principal="mallory",
                    operation="KeyCreate",
                    result="success",
                    details={},
                    prev_hash=prev.hash,
                    hash="f" * 64,
                )
            )
    with runtime.db.transaction() as session:
        result = runtime.audit.verify(session)
    assert not result.ok
    assert result.problems
