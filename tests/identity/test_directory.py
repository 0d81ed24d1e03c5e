"""The directory (``identity/directory.py``) on a real database: immutable object ids, UPN
domains, platform-made application ids, reserved names, lifecycle and token generations,
role grants, and a sign-in that costs the same whatever was wrong."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from customerkey.clock import FrozenClock
from customerkey.errors import BadParameter, Conflict, Forbidden, PrincipalNotFound, Unauthorized
from customerkey.identity import directory
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

pytestmark = pytest.mark.storage


@pytest.fixture
def rt(runtime: Runtime) -> Runtime:
    runtime.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
    runtime.tenants.create(OPERATOR, "fabrikam", mail_domain="fabrikam.com")
    return runtime


def _admin(rt: Runtime, upn: str, tenant: str) -> directory.Principal:
    principal, _ = rt.principals.create(OPERATOR, upn, tenant=tenant, roles=["tenant-admin"])
    return principal


def test_object_ids_are_fresh_guids_and_never_reused(rt: Runtime) -> None:
    first, _ = rt.principals.create(OPERATOR, "alice@contoso.com", tenant="contoso")
    assert str(uuid.UUID(first.object_id)) == first.object_id
    rt.principals.delete(OPERATOR, "alice@contoso.com")
    again, _ = rt.principals.create(OPERATOR, "alice@contoso.com", tenant="contoso")
    assert again.object_id != first.object_id
    assert rt.principals.get(again.object_id).id == "alice@contoso.com"  # found by either


def test_a_upn_uses_its_tenants_verified_domain(rt: Runtime) -> None:
    admin = _admin(rt, "admin@fabrikam.com", "fabrikam").actor()
    with pytest.raises(BadParameter, match="not a verified domain of tenant 'fabrikam'"):
        rt.principals.create(admin, "alice@contoso.com", tenant="fabrikam")
    with pytest.raises(Forbidden):
        rt.principals.create(admin, "alice@contoso.com", tenant="contoso")
    with pytest.raises(BadParameter, match="not a verified domain"):
        rt.principals.create(OPERATOR, "alice@contoso.com", tenant="fabrikam")
    # A tenant admin's users use its domain; the operator may use a domain nobody verified,
    # which then cannot be verified by another tenant.
    assert rt.principals.create(admin, "bob@fabrikam.com")[0].tenant == "fabrikam"
    rt.principals.create(OPERATOR, "carl@northwind.com", tenant="fabrikam")
    with pytest.raises(Conflict, match="used by a user of another tenant"):
        rt.tenants.create(OPERATOR, "northwind", mail_domain="northwind.com")


def test_application_ids_are_made_by_the_platform(rt: Runtime) -> None:
    admin = _admin(rt, "admin@contoso.com", "contoso").actor()
    made, secret = rt.principals.create(admin, None, kind="service", display_name="billing")
    assert secret and made.display_name == "billing" and made.tenant == "contoso"
    assert str(uuid.UUID(made.id)) == made.id != made.object_id
    for chosen in ("billing-app", "operator", EXCHANGE.app_id):
        with pytest.raises(BadParameter, match="made by the platform"):
            rt.principals.create(admin, chosen, kind="service")
    # The operator may choose one, but never a reserved name.
    assert (
        rt.principals.create(OPERATOR, "etl-1", kind="service", tenant="contoso")[0].id == "etl-1"
    )
    for reserved in ("operator", "customerkey-service", EXCHANGE.app_id):
        with pytest.raises(Conflict, match="reserved"):
            rt.principals.create(OPERATOR, reserved, kind="service", tenant="contoso")
    with pytest.raises(Forbidden):  # nobody but the operator makes principals there
        rt.principals.create(admin, None, kind="service", tenant="customerkey")


def test_roles_only_the_operator_grants(rt: Runtime) -> None:
    admin = _admin(rt, "admin@contoso.com", "contoso").actor()
    for role in ("operator", "purge-approver"):
        with pytest.raises(Forbidden, match=f"grant the role '{role}'"):
            rt.principals.create(admin, "x@contoso.com", roles=[role])
    rt.principals.create(admin, "y@contoso.com", roles=["tenant-admin"])
    with pytest.raises(Forbidden, match="purge-approver"):
        rt.principals.change_roles(admin, "y@contoso.com", add=["purge-approver"])
    granted = rt.principals.change_roles(OPERATOR, "y@contoso.com", add=["purge-approver"])
    assert granted.roles == ("tenant-admin", "purge-approver")
    assert dict(granted.role_granted_at)["purge-approver"] == rt.clock.now()


def test_lifecycle_bumps_the_token_generation(rt: Runtime, clock: FrozenClock) -> None:
    admin = _admin(rt, "admin@contoso.com", "contoso").actor()
    made, secret = rt.principals.create(admin, "eve@contoso.com", roles=["tenant-admin"])
    assert secret is not None and made.token_generation == 0
    assert rt.principals.authenticate("eve@contoso.com", secret, tenant="contoso").enabled
    disabled = rt.principals.set_enabled(admin, "eve@contoso.com", False)
    assert (disabled.enabled, disabled.token_generation) == (False, 1)
    with pytest.raises(Unauthorized):
        rt.principals.authenticate("eve@contoso.com", secret, tenant="contoso")
    enabled = rt.principals.set_enabled(admin, "eve@contoso.com", True)
    assert (enabled.enabled, enabled.token_generation) == (True, 1)  # old tokens stay ended
    clock.advance(timedelta(seconds=1))
    fewer = rt.principals.change_roles(admin, "eve@contoso.com", remove=["tenant-admin"])
    assert (fewer.roles, fewer.token_generation) == ((), 2)
    more = rt.principals.change_roles(admin, "eve@contoso.com", add=["tenant-admin"])
    assert more.token_generation == 2  # adding a role ends nothing
    new = rt.principals.reset_secret(admin, "eve@contoso.com")
    assert rt.principals.get("eve@contoso.com").token_generation == 3
    with pytest.raises(Unauthorized):
        rt.principals.authenticate("eve@contoso.com", secret, tenant="contoso")
    assert rt.principals.authenticate("eve@contoso.com", new, tenant="contoso")
    with pytest.raises(Conflict, match="cannot delete itself"):
        rt.principals.delete(rt.principals.get("eve@contoso.com").actor(), "eve@contoso.com")
    operations = [r.operation for r in rt.audit_log.records(OPERATOR)]
    for operation in ("PrincipalDisable", "PrincipalEnable", "PrincipalRolesChange"):
        assert operation in operations
    assert operations.count("PrincipalSecretReset") == 1


def test_another_tenants_principals_are_not_there(rt: Runtime) -> None:
    _admin(rt, "admin@contoso.com", "contoso")
    outsider = _admin(rt, "admin@fabrikam.com", "fabrikam").actor()
    for call in (
        lambda: rt.principals.show(outsider, "admin@contoso.com"),
        lambda: rt.principals.set_enabled(outsider, "admin@contoso.com", False),
        lambda: rt.principals.delete(outsider, "admin@contoso.com"),
        lambda: rt.principals.reset_secret(outsider, "admin@contoso.com"),
        lambda: rt.principals.change_roles(outsider, "admin@contoso.com", remove=["tenant-admin"]),
        lambda: rt.principals.show(outsider, "no-such@contoso.com"),
    ):
        with pytest.raises(PrincipalNotFound, match="No principal named"):
            call()
    # The platform tenant's principals are not a tenant admin's to change (nor to look up:
    # grants name them by their well-known application ids).
    with pytest.raises(PrincipalNotFound):
        rt.principals.set_enabled(outsider, EXCHANGE.app_id, False)
    assert rt.principals.set_enabled(OPERATOR, EXCHANGE.app_id, True).builtin


def test_a_sign_in_does_the_same_hashing_whatever_was_wrong(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, secret = rt.principals.create(OPERATOR, "alice@contoso.com", tenant="contoso")
    rt.principals.create(OPERATOR, "nosecret@contoso.com", tenant="contoso", with_secret=False)
    assert secret is not None
    hashed: list[str] = []
    real = directory.verify_secret

    def counting(candidate: str, encoded: str) -> bool:
        hashed.append(encoded.split("$")[1])  # the scrypt cost it ran with
        return real(candidate, encoded)

    monkeypatch.setattr(directory, "verify_secret", counting)
    for client_id, candidate in (
        ("alice@contoso.com", "wrong"),
        ("nobody@contoso.com", "wrong"),
        ("nosecret@contoso.com", "wrong"),
    ):
        with pytest.raises(Unauthorized, match=r"^Invalid client credentials\.$"):
            rt.principals.authenticate(client_id, candidate, tenant="contoso")
    assert rt.principals.authenticate("alice@contoso.com", secret, tenant="contoso")
    assert hashed == ["16384"] * 4  # one full-cost scrypt each, known id or not
