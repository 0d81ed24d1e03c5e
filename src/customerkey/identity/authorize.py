"""The one decision point: may this actor do this action to this resource?

Every front end (keys API, admin API, CLI, cmdlet shell) reaches the services, and every
service asks ``allowed(actor, action, resource)`` here; no rule lives anywhere else. Rules
compare ids the platform assigned (principal object ids, tenant ids) and roles, never names.
Resources are plain data objects the caller fills from its rows, so this module does no I/O
and is tested exhaustively on its own (``tests/identity/test_authorize.py``).

The callers raise their own refusal (its wording is theirs: Key Vault's for the keys API),
but the decision is made here. The rules:

- The platform operator (the local CLI user, or a principal with the ``operator`` role) may
  do everything except approve a purge it did not receive the ``purge-approver`` role for.
- A tenant admin administers its own tenant: principals (not the ``operator`` or
  ``purge-approver`` roles), vaults, DEPs, mailboxes, sites, files policies, its tenant's
  audit records. The platform tenant has no tenant admins.
- Any principal of a tenant may create a vault in it (and gets a full access policy on it).
- A principal holding an access policy on a vault may read the vault and use the
  permissions it holds; it sees the audit records of its own calls and of changes to its
  own grant, nothing else.
- A user opens its own mailbox: the owner's object id, resolved by the caller in the
  mailbox's tenant.
- A job is seen, and cancelled, by whoever started it (by object id).
- A purge approver reads its tenant's policies (what it signs off).
- A purge is approved by a principal of the policy's tenant other than the requester,
  holding ``purge-approver`` since before the request was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from customerkey.actor import PLATFORM_TENANT, Actor

# Roles only the platform operator may grant.
OPERATOR_GRANTED_ROLES = frozenset({"operator", "purge-approver"})


class Action(StrEnum):
    PLATFORM_OPERATE = "platform.operate"  # scheduler, sweeps, every job, tenants
    TENANT_READ = "tenant.read"
    TENANT_LOOKUP = "tenant.lookup"  # learn that a named object (a mailbox) exists in it
    TENANT_ADMINISTER = "tenant.administer"  # DEPs, mailboxes, sites, files policies, jobs
    PRINCIPAL_READ = "principal.read"
    PRINCIPAL_MANAGE = "principal.manage"  # create, disable, enable, delete, reset secret
    ROLE_GRANT = "role.grant"  # add or remove a role
    VAULT_CREATE = "vault.create"
    VAULT_READ = "vault.read"
    VAULT_MANAGE = "vault.manage"  # delete, recover, purge, access policies, see all grants
    KEY_OPERATION = "key.operation"  # a data-plane or key-management permission
    MAILBOX_OPEN = "mailbox.open"
    AUDIT_READ = "audit.read"  # one record
    AUDIT_VERIFY = "audit.verify"  # the whole chain
    PURGE_APPROVE = "purge.approve"
    JOB_READ = "job.read"
    JOB_CANCEL = "job.cancel"  # whoever may see a job may cancel it


@dataclass(frozen=True)
class Platform:
    """The platform as a whole."""


@dataclass(frozen=True)
class Tenant:
    id: str


@dataclass(frozen=True)
class Principal:
    tenant: str
    builtin: bool = False


@dataclass(frozen=True)
class RoleGrant:
    tenant: str  # the principal's tenant
    role: str


@dataclass(frozen=True)
class Vault:
    tenant: str
    granted: frozenset[str] = frozenset()  # the actor's key permissions on this vault


@dataclass(frozen=True)
class KeyAccess:
    tenant: str
    granted: frozenset[str]  # the actor's key permissions on the vault
    needed: str


@dataclass(frozen=True)
class Mailbox:
    tenant: str
    owner_object_id: str | None  # the user principal of the mailbox's tenant with its UPN


@dataclass(frozen=True)
class AuditEntry:
    tenant: str | None
    vault_id: str | None
    actor_object_id: str | None
    subject_object_id: str | None  # whose grant or principal a record changed
    # Vault ids the reader holds a grant on.
    reader_vault_ids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Job:
    created_by_id: str | None  # the object id of whoever started it


@dataclass(frozen=True)
class PurgeRequest:
    tenant: str
    requester_object_id: str
    requested_at: datetime


Resource = (
    Platform
    | Tenant
    | Principal
    | RoleGrant
    | Vault
    | KeyAccess
    | Mailbox
    | AuditEntry
    | Job
    | PurgeRequest
)


def _admin_of(actor: Actor, tenant: str) -> bool:
    return (
        tenant != PLATFORM_TENANT
        and actor.tenant == tenant
        and "tenant-admin" in actor.roles
        and bool(actor.object_id)
    )


def _member_of(actor: Actor, tenant: str) -> bool:
    return tenant != PLATFORM_TENANT and actor.tenant == tenant and bool(actor.object_id)


def _approver_of(actor: Actor, tenant: str) -> bool:
    return (
        tenant != PLATFORM_TENANT
        and actor.tenant == tenant
        and "purge-approver" in actor.roles
        and bool(actor.object_id)
    )


def allowed(actor: Actor, action: Action, resource: Resource) -> bool:
    """The decision; pure and total (an unknown action/resource pair is refused)."""
    if action is Action.PURGE_APPROVE:
        return isinstance(resource, PurgeRequest) and _may_approve_purge(actor, resource)
    if actor.is_operator:
        return True
    match action, resource:
        case Action.TENANT_READ, Tenant(id=tenant):
            # purge approvers read the policies whose purge they sign off
            return _admin_of(actor, tenant) or _approver_of(actor, tenant)
        case Action.TENANT_ADMINISTER, Tenant(id=tenant):
            return _admin_of(actor, tenant)
        case Action.PRINCIPAL_READ | Action.PRINCIPAL_MANAGE, Principal(tenant=t, builtin=b):
            return _admin_of(actor, t) and not (b and action is Action.PRINCIPAL_MANAGE)
        case Action.ROLE_GRANT, RoleGrant(tenant=tenant, role=role):
            return _admin_of(actor, tenant) and role not in OPERATOR_GRANTED_ROLES
        case Action.VAULT_CREATE | Action.TENANT_LOOKUP, Tenant(id=tenant):
            # Any principal of a tenant may create vaults in it (it gets a full access policy
            # on them; managing them is its tenant admins'), and may learn which of its
            # objects exist; nobody else may tell another tenant's objects from missing ones.
            return _member_of(actor, tenant)
        case Action.VAULT_MANAGE, Vault(tenant=tenant):
            return _admin_of(actor, tenant)
        case Action.VAULT_READ, Vault(tenant=tenant, granted=granted):
            return _admin_of(actor, tenant) or bool(granted)
        case Action.KEY_OPERATION, KeyAccess(granted=granted, needed=needed):
            # Vault access policies are the only way to keys, for tenant admins too (as in
            # Azure: managing a vault is not using its keys; an admin grants itself first).
            return needed in granted
        case Action.MAILBOX_OPEN, Mailbox(tenant=tenant, owner_object_id=owner):
            return _admin_of(actor, tenant) or (
                owner is not None
                and actor.kind == "user"
                and actor.tenant == tenant
                and owner == actor.object_id
            )
        case Action.AUDIT_READ, AuditEntry() as entry:
            return _may_read_audit(actor, entry)
        case Action.JOB_READ | Action.JOB_CANCEL, Job(created_by_id=owner):
            return owner is not None and bool(actor.object_id) and owner == actor.object_id
    return False


def _may_read_audit(actor: Actor, entry: AuditEntry) -> bool:
    if entry.tenant is not None and _admin_of(actor, entry.tenant):
        return True
    if not actor.object_id:
        return False
    # A grantee: its own calls and changes to its own grant, on vaults it holds a grant on.
    own = actor.object_id in (entry.actor_object_id, entry.subject_object_id)
    if entry.vault_id is None:
        return own and entry.tenant == actor.tenant
    return own and entry.vault_id in entry.reader_vault_ids


def _may_approve_purge(actor: Actor, request: PurgeRequest) -> bool:
    granted = actor.role_granted_at.get("purge-approver")
    return (
        bool(actor.object_id)
        and actor.kind != "operator"
        and actor.tenant == request.tenant
        and actor.object_id != request.requester_object_id
        and "purge-approver" in actor.roles
        and granted is not None
        # At or before: the request's own instant counts (a frozen clock gives both one time).
        and granted <= request.requested_at
    )
