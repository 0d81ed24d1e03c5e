"""The directory: users and service principals, each with an immutable object id.

Every principal has a platform-made object id (a random GUID) and exactly one tenant; grants,
ownership and tokens name the object id, so deleting a principal and creating another of the
same name never inherits anything. Users sign in with a UPN that is unique across the platform
and whose domain is the mail domain of their tenant (a tenant admin can only create users of
its own domain; the operator may create users of a domain no other tenant has verified).
Service principals get a platform-made application (client) id; only the operator may choose
one. The first-party workload apps and the platform's own names are reserved and live in the
platform tenant, which no tenant admin administers.

Lifecycle: create, disable, enable, delete, add and remove roles, reset the secret, each
audited. Disable, delete, role removal and secret reset bump the principal's token
generation, which every request checks, so tokens issued before them stop working at once.
Client secrets are stored only as scrypt hashes; a new secret is shown once. Roles:
``operator`` (runs the platform), ``tenant-admin`` (administers its tenant) and
``purge-approver`` (signs off a permanent data purge); the operator alone grants the first
and the last.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.actor import OPERATOR, Actor
from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.secret_hash import hash_secret, new_client_secret, verify_secret
from customerkey.errors import BadParameter, Conflict, Forbidden, PrincipalNotFound, Unauthorized
from customerkey.identity import authorize as authz
from customerkey.identity.workload_principals import WORKLOAD_PRINCIPALS
from customerkey.rng import Rng
from customerkey.storage.database import Database
from customerkey.storage.models import PrincipalRow, TenantRow
from customerkey.storage.repositories import PrincipalRepository

ROLES = ("operator", "tenant-admin", "purge-approver")
KINDS = ("user", "service")
# Names no one may take: the platform's own identities and the first-party apps.
RESERVED_NAMES = frozenset(
    {"operator", "customerkey", "customerkey-service", "system", "platform"}
    | {w.app_id for w in WORKLOAD_PRINCIPALS}
)
_UPN = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_SPN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,127}$")
# Verified against when a client id is unknown, so an unknown id costs the same scrypt work
# as a wrong secret and the timing does not tell which ids exist. (The hash of a random
# secret nobody knows; parameters as hash_secret makes them.)
_DUMMY_HASH = (
    "scrypt$16384$8$1$c2VjcmV0LXNhbHQtZm9yLXVua25vd24taWRz$"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)


@dataclass(frozen=True)
class Principal:
    id: str  # the sign-in name: UPN or application id
    kind: str
    tenant: str
    display_name: str
    roles: tuple[str, ...]
    has_secret: bool
    builtin: bool
    created_at: datetime
    object_id: str = ""
    enabled: bool = True
    token_generation: int = 0
    role_granted_at: tuple[tuple[str, datetime], ...] = ()

    def actor(self, request_id: str | None = None, *, impersonated_by: str | None = None) -> Actor:
        return Actor(
            principal_id=self.id,
            kind=self.kind,
            tenant=self.tenant,
            roles=self.roles,
            request_id=request_id,
            object_id=self.object_id,
            role_granted_at=dict(self.role_granted_at),
            impersonated_by=impersonated_by,
        )


def _principal(row: PrincipalRow) -> Principal:
    grants = []
    for role, when in (row.role_grants or {}).items():
        try:
            grants.append((role, datetime.fromisoformat(str(when))))
        except ValueError:
            continue
    return Principal(
        id=row.id,
        kind=row.kind,
        tenant=row.tenant,
        display_name=row.display_name,
        roles=tuple(row.roles),
        has_secret=row.secret_hash is not None,
        builtin=row.builtin,
        created_at=row.created_at,
        object_id=row.object_id,
        enabled=row.enabled,
        token_generation=row.token_generation,
        role_granted_at=tuple(grants),
    )


def _operates(actor: Actor) -> bool:
    """The platform operator's prerogatives here: choosing an application id, using a domain
    no tenant has verified, listing every tenant's principals."""
    return authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform())


def validate_principal_id(principal_id: str, kind: str) -> str:
    if kind not in KINDS:
        raise BadParameter(f"Principal kind must be 'user' or 'service', got '{kind}'.")
    if kind == "user" and not _UPN.match(principal_id):
        raise BadParameter(f"'{principal_id}' is not a user principal name (name@domain).")
    if kind == "service" and not _SPN.match(principal_id):
        raise BadParameter(f"'{principal_id}' is not a valid service principal id.")
    return principal_id.lower()


def _validate_roles(roles: Sequence[str]) -> list[str]:
    for role in roles:
        if role not in ROLES:
            raise BadParameter(f"Unknown role '{role}'; roles are: {', '.join(ROLES)}.")
    return list(dict.fromkeys(roles))


class PrincipalService:
    def __init__(self, db: Database, *, clock: Clock, rng: Rng, audit: AuditLog) -> None:
        self.db = db
        self._clock = clock
        self._rng = rng
        self._audit = audit

    def _new_guid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))

    def _record(
        self,
        session: Session,
        actor: Actor,
        operation: str,
        row: PrincipalRow,
        details: dict[str, object],
    ) -> None:
        self._audit.append(
            session,
            principal=actor.audit_name,
            operation=operation,
            request_id=actor.request_id,
            tenant=row.tenant,
            actor_id=actor.object_id or None,
            subject_id=row.object_id,
            details={"id": row.id, "object_id": row.object_id, **details},
        )

    # ------------------------------------------------------------------ create

    def create(
        self,
        actor: Actor,
        principal_id: str | None,
        *,
        kind: str = "user",
        tenant: str | None = None,
        display_name: str | None = None,
        roles: Sequence[str] = (),
        with_secret: bool = True,
        builtin: bool = False,
    ) -> tuple[Principal, str | None]:
        """Create a principal; returns it and its new client secret (shown only now).

        Users: ``principal_id`` is the UPN. Service principals: the platform makes the
        application id; an operator may give one (``principal_id``), a tenant admin may not."""
        tenant = (tenant or actor.tenant).strip().lower()
        if not _TENANT.match(tenant):
            raise BadParameter(f"'{tenant}' is not a valid tenant name.")
        if kind not in KINDS:
            raise BadParameter(f"Principal kind must be 'user' or 'service', got '{kind}'.")
        wanted_roles = _validate_roles(roles)
        if not authz.allowed(actor, authz.Action.PRINCIPAL_MANAGE, authz.Principal(tenant)):
            raise Forbidden(f"'{actor.principal_id}' cannot create principals in '{tenant}'.")
        for role in wanted_roles:
            if not authz.allowed(actor, authz.Action.ROLE_GRANT, authz.RoleGrant(tenant, role)):
                raise Forbidden(f"'{actor.principal_id}' cannot grant the role '{role}'.")
        if kind == "service" and not principal_id:
            canonical = self._new_guid()
        elif kind == "service" and not (builtin or _operates(actor)):
            raise BadParameter(
                "Application ids are made by the platform: give a display name, not an id."
            )
        else:
            canonical = validate_principal_id(principal_id or "", kind)
        if canonical in RESERVED_NAMES and not builtin:
            raise Conflict(f"The name '{canonical}' is reserved by the platform.")
        secret = new_client_secret(self._rng) if with_secret else None

        with self.db.transaction() as session:
            if kind == "user":
                self._check_domain(session, actor, canonical, tenant)
            principals = PrincipalRepository(session)
            if principals.get(canonical) is not None:
                raise Conflict(f"A principal named '{canonical}' already exists.")
            now = self._clock.now()
            row = PrincipalRow(
                id=canonical,
                object_id=self._new_guid(),
                kind=kind,
                tenant=tenant,
                display_name=display_name or principal_id or canonical,
                secret_hash=hash_secret(secret, rng=self._rng) if secret else None,
                roles=wanted_roles,
                role_grants={role: now.isoformat() for role in wanted_roles},
                builtin=builtin,
                enabled=True,
                token_generation=0,
                created_at=now,
            )
            principals.add(row)
            self._record(
                session, actor, "PrincipalCreate", row, {"kind": kind, "roles": wanted_roles}
            )
            return _principal(row), secret

    @staticmethod
    def _check_domain(session: Session, actor: Actor, upn: str, tenant: str) -> None:
        """A UPN's domain is its tenant's verified mail domain. The operator may also use a
        domain no tenant has verified yet (the tenant that later verifies it must own it)."""
        domain = upn.rsplit("@", 1)[1]
        owner = session.scalar(select(TenantRow).where(TenantRow.mail_domain == domain))
        if owner is not None and owner.id == tenant:
            return
        if owner is None and _operates(actor):
            return
        raise BadParameter(
            f"The domain '{domain}' is not a verified domain of tenant '{tenant}'; a user's "
            "UPN must use its tenant's mail domain."
        )

    def ensure(
        self,
        principal_id: str,
        *,
        kind: str,
        tenant: str,
        display_name: str,
        roles: Sequence[str] = (),
        builtin: bool = False,
    ) -> Principal:
        """Create a principal without a secret if it does not exist (built-in principals)."""
        with self.db.transaction() as session:
            row = PrincipalRepository(session).get(principal_id)
            if row is not None:
                return _principal(row)
        principal, _ = self.create(
            OPERATOR,
            principal_id,
            kind=kind,
            tenant=tenant,
            display_name=display_name,
            roles=roles,
            with_secret=False,
            builtin=builtin,
        )
        return principal

    # ------------------------------------------------------------------ lifecycle

    def _managed(self, session: Session, actor: Actor, reference: str) -> PrincipalRow:
        row = PrincipalRepository(session).find(reference)
        resource = authz.Principal(row.tenant, row.builtin) if row is not None else None
        if row is None or resource is None:
            raise PrincipalNotFound(f"No principal named '{reference}'.")
        if not authz.allowed(actor, authz.Action.PRINCIPAL_READ, resource):
            # Another tenant's principal is not there, as far as this caller can tell.
            raise PrincipalNotFound(f"No principal named '{reference}'.")
        if not authz.allowed(actor, authz.Action.PRINCIPAL_MANAGE, resource):
            raise Forbidden(f"'{actor.principal_id}' cannot manage '{row.id}'.")
        return row

    def reset_secret(self, actor: Actor, principal_id: str) -> str:
        secret = new_client_secret(self._rng)
        with self.db.transaction() as session:
            row = self._managed(session, actor, principal_id)
            row.secret_hash = hash_secret(secret, rng=self._rng)
            row.token_generation += 1
            self._record(session, actor, "PrincipalSecretReset", row, {})
        return secret

    def set_enabled(self, actor: Actor, principal_id: str, enabled: bool) -> Principal:
        with self.db.transaction() as session:
            row = self._managed(session, actor, principal_id)
            if row.object_id == actor.object_id and not enabled:
                raise Conflict("A principal cannot disable itself.")
            if row.enabled != enabled:
                row.enabled = enabled
                if not enabled:
                    row.token_generation += 1
                operation = "PrincipalEnable" if enabled else "PrincipalDisable"
                self._record(session, actor, operation, row, {})
            return _principal(row)

    def delete(self, actor: Actor, principal_id: str) -> Principal:
        """Remove a principal and every access policy naming it; its tokens stop working."""
        with self.db.transaction() as session:
            row = self._managed(session, actor, principal_id)
            if row.object_id == actor.object_id:
                raise Conflict("A principal cannot delete itself.")
            gone = _principal(row)
            self._record(session, actor, "PrincipalDelete", row, {})
            PrincipalRepository(session).delete(row)
            return gone

    def change_roles(
        self,
        actor: Actor,
        principal_id: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
    ) -> Principal:
        added, removed = _validate_roles(add), _validate_roles(remove)
        with self.db.transaction() as session:
            row = self._managed(session, actor, principal_id)
            for role in (*added, *removed):
                grant = authz.RoleGrant(row.tenant, role)
                if not authz.allowed(actor, authz.Action.ROLE_GRANT, grant):
                    raise Forbidden(f"'{actor.principal_id}' cannot grant or remove '{role}'.")
            roles = [r for r in row.roles if r not in removed]
            grants = {k: v for k, v in (row.role_grants or {}).items() if k not in removed}
            now = self._clock.now().isoformat()
            for role in added:
                if role not in roles:
                    roles.append(role)
                    grants[role] = now
            if roles == list(row.roles):
                return _principal(row)
            if any(role in row.roles for role in removed):
                row.token_generation += 1
            before = list(row.roles)
            row.roles = roles
            row.role_grants = grants
            self._record(
                session, actor, "PrincipalRolesChange", row, {"before": before, "after": roles}
            )
            return _principal(row)

    # ------------------------------------------------------------------ lookups

    def get(self, principal_id: str) -> Principal:
        """By sign-in name or object id (for the platform's own plumbing: no rule applies)."""
        with self.db.transaction() as session:
            row = PrincipalRepository(session).find(principal_id)
            if row is None:
                raise PrincipalNotFound(f"No principal named '{principal_id}'.")
            return _principal(row)

    def show(self, actor: Actor, principal_id: str) -> Principal:
        with self.db.transaction() as session:
            row = PrincipalRepository(session).find(principal_id)
            if row is None or not authz.allowed(
                actor, authz.Action.PRINCIPAL_READ, authz.Principal(row.tenant, row.builtin)
            ):
                raise PrincipalNotFound(f"No principal named '{principal_id}'.")
            return _principal(row)

    def list_principals(self, actor: Actor, *, tenant: str | None = None) -> list[Principal]:
        """An operator lists every tenant's principals (or one tenant's); anyone else only
        its own tenant's, and naming another tenant is refused."""
        if not _operates(actor):
            if tenant is not None and tenant.lower() != actor.tenant.lower():
                raise Forbidden(
                    f"'{actor.principal_id}' cannot list the principals of tenant '{tenant}'."
                )
            if not authz.allowed(actor, authz.Action.PRINCIPAL_READ, authz.Principal(actor.tenant)):
                raise Forbidden(f"'{actor.principal_id}' cannot list principals.")
            tenant = actor.tenant
        with self.db.transaction() as session:
            return [_principal(r) for r in PrincipalRepository(session).all(tenant=tenant)]

    def authenticate(self, client_id: str, client_secret: str, *, tenant: str) -> Principal:
        """Check a client id and secret; the same refusal, after the same hashing work,
        whatever was wrong (unknown id, no secret, wrong secret, disabled, wrong tenant)."""
        refusal = Unauthorized("Invalid client credentials.")
        with self.db.transaction() as session:
            row = PrincipalRepository(session).get(client_id)
        stored = row.secret_hash if row is not None and row.secret_hash else _DUMMY_HASH
        matches = verify_secret(client_secret, stored)
        if row is None or row.secret_hash is None or not matches or not row.enabled:
            raise refusal
        # Service principals are multi-tenant (the workloads reach every customer's vaults, and
        # the SDK asks for a token in the vault's tenant); users sign in to their own tenant.
        own = (row.tenant.lower(), "common", "organizations")
        if row.kind == "user" and tenant.lower() not in own:
            raise refusal
        return _principal(row)
