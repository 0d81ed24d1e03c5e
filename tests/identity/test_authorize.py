"""The authorization decision point (``identity.authorize``): every kind of caller against
every action, on its own tenant's resources and on another tenant's, with each outcome
written down. Two tenants, contoso and fabrikam; the platform tenant has no admins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customerkey.actor import OPERATOR, PLATFORM_TENANT, Actor
from customerkey.identity import authorize as authz
from customerkey.identity.authorize import Action

T0 = datetime(2026, 12, 1, tzinfo=UTC)
CONTOSO, FABRIKAM = "contoso", "fabrikam"

ACTORS: dict[str, Actor] = {
    "operator": OPERATOR,
    "operator_role": Actor(
        "ops@platform.example", tenant="platform", roles=("operator",), object_id="o-ops"
    ),
    "admin": Actor(
        "admin@contoso.com", tenant=CONTOSO, roles=("tenant-admin",), object_id="o-admin"
    ),
    "user": Actor("alice@contoso.com", tenant=CONTOSO, object_id="o-alice"),
    "service": Actor("app-1", kind="service", tenant=CONTOSO, object_id="o-app"),
    "other_admin": Actor(
        "admin@fabrikam.com", tenant=FABRIKAM, roles=("tenant-admin",), object_id="o-fadmin"
    ),
    # a tenant-admin role without an object id is no directory principal
    "nameless_admin": Actor("admin@contoso.com", tenant=CONTOSO, roles=("tenant-admin",)),
    "platform_admin": Actor(
        "x@customerkey", tenant=PLATFORM_TENANT, roles=("tenant-admin",), object_id="o-plat"
    ),
    "approver": Actor(
        "approver@contoso.com", tenant=CONTOSO, roles=("purge-approver",), object_id="o-appr"
    ),
}


def _decisions(resource: authz.Resource, action: Action) -> set[str]:
    return {name for name, actor in ACTORS.items() if authz.allowed(actor, action, resource)}


ALWAYS = {"operator", "operator_role"}
ADMINS = ALWAYS | {"admin"}


@pytest.mark.parametrize(
    ("action", "resource", "expected"),
    [
        (Action.PLATFORM_OPERATE, authz.Platform(), ALWAYS),
        (Action.AUDIT_VERIFY, authz.Platform(), ALWAYS),
        (Action.TENANT_READ, authz.Tenant(CONTOSO), ADMINS | {"approver"}),
        (Action.TENANT_READ, authz.Tenant(PLATFORM_TENANT), ALWAYS),
        (Action.TENANT_READ, authz.Tenant(FABRIKAM), ALWAYS | {"other_admin"}),
        (Action.TENANT_ADMINISTER, authz.Tenant(CONTOSO), ADMINS),
        (Action.TENANT_ADMINISTER, authz.Tenant(FABRIKAM), ALWAYS | {"other_admin"}),
        (Action.TENANT_ADMINISTER, authz.Tenant(PLATFORM_TENANT), ALWAYS),
        (Action.PRINCIPAL_READ, authz.Principal(CONTOSO), ADMINS),
        (Action.PRINCIPAL_MANAGE, authz.Principal(CONTOSO), ADMINS),
        (Action.PRINCIPAL_MANAGE, authz.Principal(FABRIKAM), ALWAYS | {"other_admin"}),
        (Action.PRINCIPAL_MANAGE, authz.Principal(PLATFORM_TENANT, builtin=True), ALWAYS),
        # a built-in principal is read by its tenant's admins but managed by the operator only
        (Action.PRINCIPAL_READ, authz.Principal(CONTOSO, builtin=True), ADMINS),
        (Action.PRINCIPAL_MANAGE, authz.Principal(CONTOSO, builtin=True), ALWAYS),
        (Action.ROLE_GRANT, authz.RoleGrant(CONTOSO, "tenant-admin"), ADMINS),
        (Action.ROLE_GRANT, authz.RoleGrant(CONTOSO, "purge-approver"), ALWAYS),
        (Action.ROLE_GRANT, authz.RoleGrant(CONTOSO, "operator"), ALWAYS),
        (Action.ROLE_GRANT, authz.RoleGrant(FABRIKAM, "tenant-admin"), ALWAYS | {"other_admin"}),
        (
            Action.VAULT_CREATE,
            authz.Tenant(CONTOSO),
            ALWAYS | {"admin", "user", "service", "approver"},
        ),
        (Action.VAULT_CREATE, authz.Tenant(FABRIKAM), ALWAYS | {"other_admin"}),
        (Action.VAULT_CREATE, authz.Tenant(PLATFORM_TENANT), ALWAYS),
        (
            Action.TENANT_LOOKUP,
            authz.Tenant(CONTOSO),
            ALWAYS | {"admin", "user", "service", "approver"},
        ),
        (Action.TENANT_LOOKUP, authz.Tenant(FABRIKAM), ALWAYS | {"other_admin"}),
        (Action.TENANT_LOOKUP, authz.Tenant(PLATFORM_TENANT), ALWAYS),
        (Action.VAULT_MANAGE, authz.Vault(CONTOSO), ADMINS),
        (Action.VAULT_MANAGE, authz.Vault(FABRIKAM), ALWAYS | {"other_admin"}),
        # holding a grant lets one read a vault, not manage it
        (Action.VAULT_MANAGE, authz.Vault(CONTOSO, frozenset({"get"})), ADMINS),
        (Action.VAULT_READ, authz.Vault(CONTOSO), ADMINS),
        (Action.VAULT_READ, authz.Vault(CONTOSO, frozenset({"get"})), set(ACTORS)),
        (Action.KEY_OPERATION, authz.KeyAccess(CONTOSO, frozenset(), "unwrapKey"), ALWAYS),
        (
            Action.KEY_OPERATION,
            authz.KeyAccess(CONTOSO, frozenset({"get", "wrapKey"}), "unwrapKey"),
            ALWAYS,
        ),
        (
            Action.KEY_OPERATION,
            authz.KeyAccess(CONTOSO, frozenset({"unwrapKey"}), "unwrapKey"),
            set(ACTORS),
        ),
        (Action.MAILBOX_OPEN, authz.Mailbox(CONTOSO, None), ADMINS),
        (Action.MAILBOX_OPEN, authz.Mailbox(CONTOSO, "o-alice"), ADMINS | {"user"}),
        (Action.MAILBOX_OPEN, authz.Mailbox(FABRIKAM, "o-alice"), ALWAYS | {"other_admin"}),
        # a service principal never owns a mailbox, even with the owner's object id
        (Action.MAILBOX_OPEN, authz.Mailbox(CONTOSO, "o-app"), ADMINS),
        (Action.JOB_READ, authz.Job("o-alice"), ALWAYS | {"user"}),
        (Action.JOB_READ, authz.Job(None), ALWAYS),
        # whoever may see a job may cancel it
        (Action.JOB_CANCEL, authz.Job("o-alice"), ALWAYS | {"user"}),
        (Action.JOB_CANCEL, authz.Job(None), ALWAYS),
        # an action asked about the wrong kind of resource is refused (but the operator's)
        (Action.VAULT_MANAGE, authz.Tenant(CONTOSO), ALWAYS),
        (Action.MAILBOX_OPEN, authz.Vault(CONTOSO), ALWAYS),
    ],
)
def test_decision_matrix(action: Action, resource: authz.Resource, expected: set[str]) -> None:
    assert _decisions(resource, action) == expected


def _entry(**fields: object) -> authz.AuditEntry:
    base: dict[str, object] = {
        "tenant": CONTOSO,
        "vault_id": "v-contoso",
        "actor_object_id": "o-someone",
        "subject_object_id": None,
        "reader_vault_ids": frozenset(),
    }
    base.update(fields)
    return authz.AuditEntry(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        # a tenant's records: its admins (and the operator) read them all
        (_entry(), ADMINS),
        (_entry(tenant=FABRIKAM, vault_id="v-fab"), ALWAYS | {"other_admin"}),
        # records written before scopes existed: the operator's only
        (_entry(tenant=None, vault_id=None, actor_object_id=None), ALWAYS),
        # a grantee reads its own calls on a vault it holds a grant on...
        (
            _entry(actor_object_id="o-alice", reader_vault_ids=frozenset({"v-contoso"})),
            ADMINS | {"user"},
        ),
        # ...and changes to its own grant...
        (
            _entry(subject_object_id="o-alice", reader_vault_ids=frozenset({"v-contoso"})),
            ADMINS | {"user"},
        ),
        # ...not another principal's calls on that vault...
        (_entry(reader_vault_ids=frozenset({"v-contoso"})), ADMINS),
        # ...nor its own calls on a vault it no longer holds a grant on
        (_entry(actor_object_id="o-alice"), ADMINS),
        # a record with no vault: one's own, within one's tenant
        (_entry(vault_id=None, subject_object_id="o-alice"), ADMINS | {"user"}),
        (
            _entry(tenant=FABRIKAM, vault_id=None, subject_object_id="o-alice"),
            ALWAYS | {"other_admin"},
        ),
    ],
)
def test_audit_visibility(entry: authz.AuditEntry, expected: set[str]) -> None:
    assert _decisions(entry, Action.AUDIT_READ) == expected


def _approver(**fields: object) -> Actor:
    base: dict[str, object] = {
        "principal_id": "approver@contoso.com",
        "tenant": CONTOSO,
        "roles": ("purge-approver",),
        "object_id": "o-approver",
        "role_granted_at": {"purge-approver": T0},
    }
    base.update(fields)
    return Actor(**base)  # type: ignore[arg-type]


REQUEST = authz.PurgeRequest(CONTOSO, "o-admin", T0 + timedelta(days=1))


@pytest.mark.parametrize(
    ("approver", "allowed"),
    [
        (_approver(), True),
        # the role held since exactly the request's instant still counts
        (_approver(role_granted_at={"purge-approver": REQUEST.requested_at}), True),
        (
            _approver(
                role_granted_at={"purge-approver": REQUEST.requested_at + timedelta(seconds=1)}
            ),
            False,
        ),
        (_approver(role_granted_at={}), False),
        (_approver(roles=("tenant-admin",)), False),
        (_approver(object_id="o-admin"), False),  # the requester itself
        (_approver(object_id=""), False),
        (_approver(tenant=FABRIKAM), False),
        (_approver(kind="operator"), False),
        # the operator (and an operator-role principal) approves nothing by itself
        (OPERATOR, False),
        (ACTORS["operator_role"], False),
        (ACTORS["admin"], False),
        # an impersonated approver signs as the approver
        (_approver(impersonated_by="operator"), True),
    ],
)
def test_purge_approval(approver: Actor, allowed: bool) -> None:
    assert authz.allowed(approver, Action.PURGE_APPROVE, REQUEST) is allowed


def test_purge_approval_needs_a_purge_request() -> None:
    assert not authz.allowed(_approver(), Action.PURGE_APPROVE, authz.Tenant(CONTOSO))


def test_impersonation_is_visible_in_the_audit_name() -> None:
    assert ACTORS["user"].audit_name == "alice@contoso.com"
    assert _approver(impersonated_by="operator").audit_name == "operator as approver@contoso.com"
