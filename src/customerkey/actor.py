"""Who is calling: the principal's immutable object id, its tenant and roles.

An ``Actor`` is what every front end (keys API, admin API, CLI, cmdlet shell) hands the
services. Decisions are made on ``object_id`` and ``tenant`` (ids the platform assigned),
never on ``principal_id``, which is only the sign-in name shown in messages and the audit
log. The local platform operator (whoever holds the home folder) has kind ``operator``;
``--as`` impersonation keeps the impersonated principal's rights and records who did it
(``impersonated_by``), so the audit log says "operator as alice@contoso.com".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

# The tenant of the platform itself: the first-party workload apps and the platform's own
# names live here, and no tenant admin administers it.
PLATFORM_TENANT = "customerkey"
# The object id of the local operator: never the id of a directory principal (ids are
# random version-4 GUIDs, and this is the nil GUID).
OPERATOR_OBJECT_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Actor:
    """Who is asking. ``operator`` bypasses access policies (the local platform operator)."""

    principal_id: str  # sign-in name (UPN or application id): for messages, never decisions
    kind: str = "user"  # "user" | "service" | "operator"
    tenant: str = "default"
    roles: Sequence[str] = ()
    request_id: str | None = None
    object_id: str = ""
    # When each role was granted (the two-person purge needs "held before the request").
    role_granted_at: Mapping[str, datetime] = field(default_factory=dict)
    impersonated_by: str | None = None

    @property
    def is_operator(self) -> bool:
        """A fact about the actor, not a permission: what it may do is ``identity.authorize``."""
        return self.kind == "operator" or "operator" in self.roles

    @property
    def audit_name(self) -> str:
        """The name the audit log records: impersonation is visible."""
        if self.impersonated_by:
            return f"{self.impersonated_by} as {self.principal_id}"
        return self.principal_id


OPERATOR = Actor(
    principal_id="operator",
    kind="operator",
    tenant=PLATFORM_TENANT,
    roles=("operator",),
    object_id=OPERATOR_OBJECT_ID,
)
