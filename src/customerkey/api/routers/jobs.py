"""The admin API's background jobs under ``/api/v1/jobs``: poll the work a call queued, and
cancel it where its kind allows (``jobs.cancel``).

A job is seen, and cancelled, by whoever started it, and by the operator
(``jobs.visibility``, ``identity.authorize``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from customerkey.api.deps import admin_actor, api
from customerkey.jobs.cancel import cancel_job
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


@router.post("/jobs/{job_id}/cancel", status_code=202)
def cancel(job_id: str, request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    """Cancel a job: 202 with the job, ``cancelled`` (it was queued) or ``cancelling`` (it
    stops after its current batch); 409 for a finished job or a kind that cannot be stopped
    part-way."""
    runtime = api(request).runtime
    outcome = cancel_job(runtime.jobs, runtime.audit, runtime.job_kinds(), actor, job_id)
    return {**job_view(outcome.job), "Note": outcome.note}
