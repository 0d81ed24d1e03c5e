"""``customerkey files|site|file ...``: the files workload (SharePoint Online / OneDrive).

``files`` is the tenant's files policy (Register-, Update- and Get-SPODataEncryptionPolicy,
recovery, the data purge path); ``site`` manages sites; ``file`` streams content in and out
with a progress bar, whatever its size.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from customerkey.cli.context import CliContext, cli_context
from customerkey.cli.job_commands import finish_or_report
from customerkey.cli.mail_commands import tenant_of
from customerkey.cli.output import emit_list, emit_message, emit_object, err_console
from customerkey.errors import BadParameter
from customerkey.files_views import (
    file_view,
    files_policy_view,
    site_policy_view,
    site_view,
    tik_usage_view,
    version_view,
)

files_app = typer.Typer(help="The tenant's files data encryption policy (SharePoint/OneDrive).")
sites = typer.Typer(help="Sites: https://<tenant>.sharepoint.local/sites/<name>.")
file_app = typer.Typer(help="Files in sites: streamed in and out, versions, recycle bin.")

SITE_COLUMNS = ["Url", "Title", "Files", "Encryption"]
FILE_COLUMNS = ["Path", "Size", "Version", "Versions", "Modified"]
RECYCLED_COLUMNS = ["Path", "Size", "Versions", "DeletedBy", "Deleted", "FileId"]
VERSION_COLUMNS = ["Version", "Size", "Chunks", "IsCurrent", "CreatedBy", "Created"]

_IDENTITY = typer.Option(
    None, "--identity", help="The tenant's admin site URL, https://<tenant>-admin.sharepoint.local."
)
_TENANT = typer.Option(None, "--tenant")


def _tenant(c: CliContext, tenant: str | None, identity: str | None) -> str:
    return c.runtime.files.resolve_tenant(tenant, identity) or tenant_of(c, None)


def _show_status(c: CliContext, tenant: str) -> None:
    emit_object(files_policy_view(c.runtime.files.status(c.actor, tenant)), as_json=c.as_json)


class _BytesBar:
    """A transfer progress bar that appears with the first bytes moved, so a command that
    fails before any (a bad path, a missing site, a refused key) prints only its error."""

    def __init__(self, c: CliContext, what: str) -> None:
        self._bar = Progress(
            TextColumn(what),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=c.as_json,
        )
        self._task: TaskID | None = None

    def update(self, done: int, total: int | None) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("transfer", total=total)
        self._bar.update(self._task, completed=done, total=total)

    def __enter__(self) -> _BytesBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._bar.stop()


# ------------------------------------------------------------------ files policy


@files_app.command("register")
def files_register(
    ctx: typer.Context,
    primary: str = typer.Option(..., "--primary", help="The primary root key URI."),
    secondary: str = typer.Option(..., "--secondary", help="The secondary root key URI."),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the job and return."),
) -> None:
    """Register-SPODataEncryptionPolicy: every site is re-protected under the new TIK."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.register(c.actor, tenant_id, primary, secondary, identity=identity)
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@files_app.command("roll")
def files_roll(
    ctx: typer.Context,
    key_type: str = typer.Option(..., "--key-type", help="primary or secondary"),
    key: str = typer.Option(..., "--key", help="The new key URI (with a version, or newest)."),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the job and return."),
) -> None:
    """Update-SPODataEncryptionPolicy: a key roll (one at a time); no file is rewritten."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.roll(c.actor, tenant_id, key_type, key)
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@files_app.command("status")
def files_status(
    ctx: typer.Context,
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    generations: bool = typer.Option(
        False, "--generations", help="Also list the TIK generations and what uses each."
    ),
) -> None:
    """Get-SPODataEncryptionPolicy: key URIs, State and percent of sites done."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    status = c.runtime.files.status(c.actor, tenant_id)
    view = files_policy_view(status)
    if generations and status.policy_id:
        view["KeyGenerationUsage"] = [
            tik_usage_view(g) for g in c.runtime.usage.policy_generations(status.policy_id)
        ]
    emit_object(view, as_json=c.as_json)


@files_app.command("resume")
def files_resume(
    ctx: typer.Context,
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Finish a registration or key roll whose job failed (after fixing the cause)."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.resume(c.actor, tenant_id)
    if job is None:
        emit_message(
            "Every site is on the current key generation; nothing to resume.",
            as_json=c.as_json,
            data={"resumed": False},
        )
        return
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@files_app.command("recover")
def files_recover(
    ctx: typer.Context,
    primary: str = typer.Option(..., "--primary", help="The new primary root key URI."),
    secondary: str = typer.Option(..., "--secondary", help="The new secondary root key URI."),
    reason: str = typer.Option(..., "--reason", help="The customer's request (audited)."),
    with_availability_key: bool = typer.Option(
        False,
        "--with-availability-key",
        help="Confirm: unwrap the tenant's keys with the availability key.",
    ),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Operator recovery when the root keys are lost: the availability key unwraps the TIK,
    and every site key is re-wrapped under a new TIK protected by two new root keys."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.recover(
        c.actor,
        tenant_id,
        primary,
        secondary,
        with_availability_key=with_availability_key,
        reason=reason,
    )
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@files_app.command("purge-request")
def files_purge_request(
    ctx: typer.Context,
    reason: str = typer.Option(..., "--reason"),
    contact: str = typer.Option(..., "--contact"),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
) -> None:
    """Start the files data purge path (refused while the SharePoint principal still has
    wrapKey/unwrapKey on either vault)."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    status = c.runtime.files.request_purge(c.actor, tenant_id, reason=reason, contact=contact)
    emit_object(files_policy_view(status), as_json=c.as_json)


@files_app.command("purge-approve")
def files_purge_approve(
    ctx: typer.Context,
    approver: str = typer.Option(
        ..., "--approver", help="The approver: a principal holding the purge-approver role."
    ),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Approve the purge: the TIK, site keys and file keys are destroyed, with the content."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.approve_purge(c.actor, tenant_id, approver)
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


# ------------------------------------------------------------------ sites


@sites.command("create")
def site_create(
    ctx: typer.Context,
    url: str,
    title: str | None = typer.Option(None, "--title"),
) -> None:
    """A new site; under the tenant's TIK when a files policy is registered."""
    c = cli_context(ctx)
    emit_object(
        site_view(c.runtime.files.create_site(c.actor, url, title=title)), as_json=c.as_json
    )


@sites.command("list")
def site_list(ctx: typer.Context, tenant: str | None = _TENANT) -> None:
    c = cli_context(ctx)
    found = c.runtime.files.list_sites(c.actor, tenant_of(c, tenant))
    emit_list([site_view(s) for s in found], SITE_COLUMNS, as_json=c.as_json)


@sites.command("show")
def site_show(ctx: typer.Context, url: str) -> None:
    c = cli_context(ctx)
    emit_object(site_view(c.runtime.files.get_site(c.actor, url)), as_json=c.as_json)


@sites.command("status")
def site_status(ctx: typer.Context, url: str) -> None:
    """Get-SPOSiteDataEncryptionPolicy: one site's State."""
    c = cli_context(ctx)
    emit_object(site_policy_view(c.runtime.files.site_status(c.actor, url)), as_json=c.as_json)


# ------------------------------------------------------------------ files


@file_app.command("put")
def file_put(
    ctx: typer.Context,
    site: str,
    path: str = typer.Argument(..., help="Path in the site, e.g. 'Shared Documents/a.xlsx'."),
    src: str = typer.Argument(..., help="A local file, or '-' for standard input."),
) -> None:
    """Upload (a new version when the file exists), streaming."""
    c = cli_context(ctx)
    if src == "-":
        source, size = sys.stdin.buffer, None
    else:
        local = Path(src)
        if not local.is_file():
            raise BadParameter(f"{src} is not a file.")
        source, size = local.open("rb"), local.stat().st_size
    try:
        with _BytesBar(c, f"uploading {path}") as bar:
            version = c.runtime.files.upload(
                c.actor, site, path, source, size_hint=size, progress=bar.update
            )
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    emit_object(
        {"Site": site, "Path": path, **version_view(version)},
        as_json=c.as_json,
    )


@file_app.command("get")
def file_get(
    ctx: typer.Context,
    site: str,
    path: str,
    dest: str = typer.Argument(..., help="A local file or folder, or '-' for standard output."),
    version: int | None = typer.Option(None, "--version", min=1, help="An older version."),
    recycle_bin: bool = typer.Option(False, "--recycle-bin", help="A file in the recycle bin."),
    force: bool = typer.Option(False, "--force", help="Overwrite DEST if it exists."),
) -> None:
    """Download, streaming; DEST appears only once every chunk has been authenticated."""
    c = cli_context(ctx)
    if dest != "-":
        target = Path(dest)
        if target.is_dir():
            target = target / path.strip().strip("/").rsplit("/", 1)[-1]
        if target.exists() and not force:
            raise BadParameter(f"{target} exists; pass --force to overwrite it.")
        if not target.parent.is_dir():
            raise BadParameter(f"The folder {target.parent} does not exist.")
    prepared = c.runtime.files.prepare_download(
        c.actor, site, path, version=version, recycled=recycle_bin
    )
    got = prepared.version
    if dest == "-":
        prepared.write_to(sys.stdout.buffer)
        sys.stdout.flush()
        return
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as handle, _BytesBar(c, f"downloading {path}") as bar:
            prepared.write_to(handle, bar.update)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    emit_message(
        f"Wrote version {got.number} of {path} ({got.size:,} bytes) to {target}.",
        as_json=c.as_json,
        data={"path": str(target), "version": got.number, "size": got.size},
    )


@file_app.command("list")
def file_list(
    ctx: typer.Context,
    site: str,
    folder: str | None = typer.Option(None, "--folder"),
    recycle_bin: bool = typer.Option(False, "--recycle-bin", help="The site's recycle bin."),
) -> None:
    c = cli_context(ctx)
    found = c.runtime.files.list_files(c.actor, site, folder=folder, recycle_bin=recycle_bin)
    columns = RECYCLED_COLUMNS if recycle_bin else FILE_COLUMNS
    emit_list([file_view(f) for f in found], columns, as_json=c.as_json)


@file_app.command("show")
def file_show(ctx: typer.Context, site: str, path: str) -> None:
    c = cli_context(ctx)
    emit_object(file_view(c.runtime.files.get_file(c.actor, site, path)), as_json=c.as_json)


@file_app.command("versions")
def file_versions(ctx: typer.Context, site: str, path: str) -> None:
    c = cli_context(ctx)
    found = c.runtime.files.versions(c.actor, site, path)
    emit_list([version_view(v) for v in found], VERSION_COLUMNS, as_json=c.as_json)


@file_app.command("delete")
def file_delete(ctx: typer.Context, site: str, path: str) -> None:
    """Move a file, with its versions, to the site's recycle bin."""
    c = cli_context(ctx)
    emit_object(file_view(c.runtime.files.delete(c.actor, site, path)), as_json=c.as_json)


@file_app.command("restore")
def file_restore(
    ctx: typer.Context,
    site: str,
    path: str = typer.Argument(..., help="Path (the most recently deleted) or file id."),
) -> None:
    """Bring a file back from the recycle bin."""
    c = cli_context(ctx)
    emit_object(file_view(c.runtime.files.restore(c.actor, site, path)), as_json=c.as_json)


@file_app.command("purge")
def file_purge(
    ctx: typer.Context,
    site: str,
    path: str | None = typer.Argument(None, help="One recycled file (path or id); else all."),
) -> None:
    """Empty the site's recycle bin: its files' keys and content are destroyed."""
    c = cli_context(ctx)
    count = c.runtime.files.purge_recycled(c.actor, site, path)
    emit_message(
        f"Removed {count} file(s) from the recycle bin of {site}.",
        as_json=c.as_json,
        data={"purged": count},
    )
