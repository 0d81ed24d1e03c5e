"""Principals: the users (UPNs) and service principals (application ids) that sign in.

Client secrets are stored only as scrypt hashes (``crypto.secret_hash``); a new secret is
shown once, when it is made. Roles: ``operator`` (runs the platform) and ``tenant-admin``
(manages the vaults and policies of its tenant).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from customerkey.audit import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.secret_hash import hash_secret, new_client_secret, verify_secret
from customerkey.errors import BadParameter, Conflict, Forbidden, PrincipalNotFound, Unauthorized
from customerkey.rng import Rng
from customerkey.storage.database import Database
from customerkey.storage.models import PrincipalRow
from customerkey.storage.repositories import PrincipalRepository
from customerkey.vault.models import Actor

ROLES = ("operator", "tenant-admin")
KINDS = ("user", "service")
_UPN = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_SPN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,127}$")


@dataclass(frozen=True)
class Principal:
    id: str
    kind: str
    tenant: str
    display_name: str
    roles: tuple[str, ...]
    has_secret: bool
    builtin: bool
    created_at: datetime

    def actor(self, request_id: str | None = None) -> Actor:
        return Actor(
            principal_id=self.id,
            kind=self.kind,
            tenant=self.tenant,
            roles=self.roles,
            request_id=request_id,
        )


def _principal(row: PrincipalRow) -> Principal:
    return Principal(
        id=row.id,
        kind=row.kind,
        tenant=row.tenant,
        display_name=row.display_name,
        roles=tuple(row.roles),
        has_secret=row.secret_hash is not None,
        builtin=row.builtin,
        created_at=row.created_at,
    )


def validate_principal_id(principal_id: str, kind: str) -> str:
    if kind not in KINDS:
        raise BadParameter(f"Principal kind must be 'user' or 'service', got '{kind}'.")
    if kind == "user" and not _UPN.match(principal_id):
        raise BadParameter(f"'{principal_id}' is not a user principal name (name@domain).")
    if kind == "service" and not _SPN.match(principal_id):
        raise BadParameter(f"'{principal_id}' is not a valid service principal id.")
    return principal_id.lower()


class PrincipalService:
    def __init__(self, db: Database, *, clock: Clock, rng: Rng, audit: AuditLog) -> None:
        self.db = db
        self._clock = clock
        self._rng = rng
        self._audit = audit

    def create(
        self,
        actor: Actor,
        principal_id: str,
        *,
        kind: str = "user",
        tenant: str | None = None,
        display_name: str | None = None,
        roles: Sequence[str] = (),
        with_secret: bool = True,
        builtin: bool = False,
    ) -> tuple[Principal, str | None]:
        """Create a principal; returns it and its new client secret (shown only now)."""
        canonical = validate_principal_id(principal_id, kind)
        tenant = tenant or actor.tenant
        if not _TENANT.match(tenant):
            raise BadParameter(f"'{tenant}' is not a valid tenant name.")
        for role in roles:
            if role not in ROLES:
                raise BadParameter(f"Unknown role '{role}'; roles are: {', '.join(ROLES)}.")
        if not actor.is_tenant_admin(tenant) or ("operator" in roles and not actor.is_operator):
            raise Forbidden(f"'{actor.principal_id}' cannot create principals in '{tenant}'.")
        secret = new_client_secret(self._rng) if with_secret else None

        with self.db.transaction() as session:
            principals = PrincipalRepository(session)
            if principals.get(canonical) is not None:
                raise Conflict(f"A principal named '{canonical}' already exists.")
            row = PrincipalRow(
                id=canonical,
                kind=kind,
                tenant=tenant,
                display_name=display_name or principal_id,
                secret_hash=hash_secret(secret, rng=self._rng) if secret else None,
                roles=list(dict.fromkeys(roles)),
                builtin=builtin,
                created_at=self._clock.now(),
            )
            principals.add(row)
            self._audit.append(
                session,
                principal=actor.principal_id,
                operation="PrincipalCreate",
                request_id=actor.request_id,
                details={"id": canonical, "kind": kind, "tenant": tenant, "roles": list(roles)},
            )
            return _principal(row), secret

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
            Actor("operator", kind="operator", roles=("operator",)),
            principal_id,
            kind=kind,
            tenant=tenant,
            display_name=display_name,
            roles=roles,
            with_secret=False,
            builtin=builtin,
        )
        return principal

    def reset_secret(self, actor: Actor, principal_id: str) -> str:
        secret = new_client_secret(self._rng)
        with self.db.transaction() as session:
            row = PrincipalRepository(session).get(principal_id)
            if row is None:
                raise PrincipalNotFound(f"No principal named '{principal_id}'.")
            if not actor.is_tenant_admin(row.tenant):
                raise Forbidden(f"'{actor.principal_id}' cannot manage '{principal_id}'.")
            row.secret_hash = hash_secret(secret, rng=self._rng)
            self._audit.append(
                session,
                principal=actor.principal_id,
                operation="PrincipalSecretReset",
                request_id=actor.request_id,
                details={"id": row.id},
            )
        return secret

    def get(self, principal_id: str) -> Principal:
        with self.db.transaction() as session:
            row = PrincipalRepository(session).get(principal_id)
            if row is None:
                raise PrincipalNotFound(f"No principal named '{principal_id}'.")
            return _principal(row)

    def list_principals(self, actor: Actor, *, tenant: str | None = None) -> list[Principal]:
        """An operator lists every tenant's principals (or one tenant's); anyone else only
        its own tenant's, and naming another tenant is refused."""
        if not actor.is_operator:
            if tenant is not None and tenant.lower() != actor.tenant.lower():
                raise Forbidden(
                    f"'{actor.principal_id}' cannot list the principals of tenant '{tenant}'."
                )
            tenant = actor.tenant
        with self.db.transaction() as session:
            return [_principal(r) for r in PrincipalRepository(session).all(tenant=tenant)]

    def authenticate(self, client_id: str, client_secret: str, *, tenant: str) -> Principal:
        """Check a client id and secret; the same refusal whatever was wrong."""
        refusal = Unauthorized("Invalid client credentials.")
        with self.db.transaction() as session:
            row = PrincipalRepository(session).get(client_id)
        if row is None or row.secret_hash is None:
            raise refusal
        if not verify_secret(client_secret, row.secret_hash):
            raise refusal
        # Service principals are multi-tenant (the workloads reach every customer's vaults, and
        # the SDK asks for a token in the vault's tenant); users sign in to their own tenant.
        own = (row.tenant.lower(), "common", "organizations")
        if row.kind == "user" and tenant.lower() not in own:
            raise refusal
        return _principal(row)
