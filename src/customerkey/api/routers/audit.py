"""The admin API's audit log under ``/api/v1`` on the bare host: reading and verifying it.

Who sees which record is the audit reader's rule (``service.auditing``), the same for the CLI.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from customerkey.api.deps import admin_actor, api
from customerkey.api.schemas import DB_INT_MAX
from customerkey.audit.reader import MAX_PAGE
from customerkey.vault.models import Actor
from customerkey.views.vault import audit_view, verification_view

router = APIRouter(prefix="/api/v1", tags=["admin"])


@router.get("/audit")
def audit_records(
    request: Request,
    vault: str | None = None,
    operation: str | None = None,
    since: int = Query(0, ge=0, le=DB_INT_MAX),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    actor: Actor = Depends(admin_actor),
) -> dict[str, Any]:
    records = api(request).runtime.audit_log.page(
        actor, vault=vault, operation=operation, since_seq=since, limit=limit
    )
    return {"value": [audit_view(r) for r in records]}


@router.get("/audit/verify")
def audit_verify(request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    result = api(request).runtime.audit_log.verify(actor)
    return verification_view(result)
