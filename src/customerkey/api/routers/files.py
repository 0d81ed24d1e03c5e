"""The admin API of the files workload under ``/api/v1``: the tenant's files policy
(Register-, Update- and Get-SPODataEncryptionPolicy, recovery, purge path), sites, and files
streamed in and out.

Same rules as the CLI: an operator or a tenant admin; objects carry the SharePoint cmdlets'
property names. A site is addressed by its ``SiteId`` (URLs do not fit in a path segment);
files by their path inside the site. Uploads are the raw request body (spooled to disk past
8 MiB, and bounded by the server's request size limit); downloads stream one authenticated
chunk at a time. Registrations and rolls are queued jobs: poll ``/api/v1/jobs/{id}`` or the
policy's ``State``.
"""

from __future__ import annotations

import tempfile
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from customerkey.api.deps import admin_actor, api
from customerkey.api.schemas import DB_INT_MAX
from customerkey.vault.models import Actor
from customerkey.views.files import (
    file_view,
    files_policy_view,
    site_policy_view,
    site_view,
    version_view,
)
from customerkey.views.mail import job_view

router = APIRouter(prefix="/api/v1", tags=["files"])
SPOOL_BYTES = 8 << 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RegisterBody(_Body):
    primary: str = Field(alias="PrimaryKeyId")
    secondary: str = Field(alias="SecondaryKeyId")


class RollBody(_Body):
    key_type: str = Field(alias="KeyType")
    key: str = Field(alias="KeyId")


class RecoverBody(_Body):
    primary: str = Field(alias="PrimaryKeyId")
    secondary: str = Field(alias="SecondaryKeyId")
    reason: str = Field(alias="Reason")
    with_availability_key: bool = Field(False, alias="WithAvailabilityKey")


class PurgeRequestBody(_Body):
    reason: str = Field(alias="PermanentDataPurgeReason")
    contact: str = Field(alias="PermanentDataPurgeContact")


class PurgeApprovalBody(_Body):
    approver: str = Field(alias="Approver")


class SiteBody(_Body):
    url: str = Field(alias="Url")
    title: str | None = Field(None, alias="Title")


class RestoreBody(_Body):
    file: str = Field(alias="File", description="A recycled file's path or FileId.")


def _policy(request: Request, actor: Actor, tenant: str) -> dict[str, Any]:
    return files_policy_view(api(request).runtime.files.status(actor, tenant))


@router.get("/tenants/{tenant}/files/policy")
def get_files_policy(
    tenant: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """Get-SPODataEncryptionPolicy."""
    return _policy(request, actor, tenant)


@router.post("/tenants/{tenant}/files/policy", status_code=202)
def register_files_policy(
    tenant: str, body: RegisterBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """Register-SPODataEncryptionPolicy."""
    job = api(request).runtime.files.register(actor, tenant, body.primary, body.secondary)
    return {"job": job_view(job), "policy": _policy(request, actor, tenant)}


@router.post("/tenants/{tenant}/files/policy/roll", status_code=202)
def roll_files_key(
    tenant: str, body: RollBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """Update-SPODataEncryptionPolicy (one roll at a time)."""
    job = api(request).runtime.files.roll(actor, tenant, body.key_type, body.key)
    return {"job": job_view(job), "policy": _policy(request, actor, tenant)}


@router.post("/tenants/{tenant}/files/policy/resume", status_code=202)
def resume_files_policy(
    tenant: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    job = api(request).runtime.files.resume(actor, tenant)
    return {"job": job_view(job) if job else None, "policy": _policy(request, actor, tenant)}


@router.post("/tenants/{tenant}/files/policy/recover", status_code=202)
def recover_files_policy(
    tenant: str, body: RecoverBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """Operator recovery with the availability key onto two new root keys (audited)."""
    job = api(request).runtime.files.recover(
        actor,
        tenant,
        body.primary,
        body.secondary,
        with_availability_key=body.with_availability_key,
        reason=body.reason,
    )
    return {"job": job_view(job), "policy": _policy(request, actor, tenant)}


@router.post("/tenants/{tenant}/files/policy/purgeRequest")
def request_files_purge(
    tenant: str, body: PurgeRequestBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    status = api(request).runtime.files.request_purge(
        actor, tenant, reason=body.reason, contact=body.contact
    )
    return files_policy_view(status)


@router.post("/tenants/{tenant}/files/policy/purgeApproval", status_code=202)
def approve_files_purge(
    tenant: str, body: PurgeApprovalBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    job = api(request).runtime.files.approve_purge(actor, tenant, body.approver)
    return {"job": job_view(job)}


@router.get("/tenants/{tenant}/sites")
def list_sites(
    tenant: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return {"value": [site_view(s) for s in api(request).runtime.files.list_sites(actor, tenant)]}


@router.post("/tenants/{tenant}/sites", status_code=201)
def create_site(
    tenant: str, body: SiteBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    site = api(request).runtime.files.create_site(actor, body.url, title=body.title, tenant=tenant)
    return site_view(site)


@router.get("/sites/{site}")
def get_site(site: str, request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    return site_view(api(request).runtime.files.get_site(actor, site))


@router.get("/sites/{site}/dataEncryptionPolicy")
def get_site_policy(
    site: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """Get-SPOSiteDataEncryptionPolicy."""
    return site_policy_view(api(request).runtime.files.site_status(actor, site))


@router.get("/sites/{site}/files")
def list_files(
    site: str,
    request: Request,
    folder: str | None = None,
    recycle_bin: bool = Query(False, alias="recycleBin"),
    actor: Actor = Depends(admin_actor),
) -> dict[str, Any]:
    found = api(request).runtime.files.list_files(
        actor, site, folder=folder, recycle_bin=recycle_bin
    )
    return {"value": [file_view(f) for f in found]}


@router.put("/sites/{site}/files/{path:path}", status_code=201)
async def upload_file(
    site: str, path: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """The raw request body becomes a new version of the file."""
    files = api(request).runtime.files
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        async for piece in request.stream():
            spool.write(piece)
        size = spool.tell()
        spool.seek(0)
        version = await run_in_threadpool(
            files.upload,
            actor,
            site,
            path,
            spool,  # type: ignore[arg-type]
            size_hint=size,
        )
    return version_view(version)


@router.get("/sites/{site}/files/{path:path}")
def download_file(
    site: str,
    path: str,
    request: Request,
    version: int | None = Query(None, ge=1, le=DB_INT_MAX),
    actor: Actor = Depends(admin_actor),
) -> StreamingResponse:
    found, chunks = api(request).runtime.files.iter_download(actor, site, path, version=version)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"Content-Length": str(found.size), "X-Version": str(found.number)},
    )


@router.delete("/sites/{site}/files/{path:path}")
def delete_file(
    site: str, path: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """Move the file to the site's recycle bin."""
    return file_view(api(request).runtime.files.delete(actor, site, path))


@router.get("/sites/{site}/versions/{path:path}")
def list_versions(
    site: str, path: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    found = api(request).runtime.files.versions(actor, site, path)
    return {"value": [version_view(v) for v in found]}


@router.post("/sites/{site}/recycleBin/restore")
def restore_file(
    site: str, body: RestoreBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return file_view(api(request).runtime.files.restore(actor, site, body.file))


@router.delete("/sites/{site}/recycleBin")
def empty_recycle_bin(
    site: str,
    request: Request,
    file: str | None = None,
    actor: Actor = Depends(admin_actor),
) -> dict[str, Any]:
    return {"purged": api(request).runtime.files.purge_recycled(actor, site, file)}
