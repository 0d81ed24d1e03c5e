"""The admin API's background jobs under ``/api/v1/jobs``: poll the work a call queued.

A job is seen by whoever started it, and by the operator (``jobs.visibility``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from customerkey.api.deps import admin_actor, api
from customerkey.jobs.visibility import check_readable, visible_jobs
from customerkey.vault.models import Actor
from customerkey.views.mail import job_view

router = APIRouter(prefix="/api/v1", tags=["service"])


@router.get("/jobs")
def list_jobs(request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    jobs = visible_jobs(actor, api(request).runtime.jobs.list_jobs())
    return {"value": [job_view(j) for j in jobs]}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    return job_view(check_readable(actor, api(request).runtime.jobs.get(job_id)))
