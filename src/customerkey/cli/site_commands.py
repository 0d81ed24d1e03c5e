"""``customerkey site ...``: sites of the files workload, each under its own site key."""

from __future__ import annotations

import typer

from customerkey.cli.context import cli_context, tenant_of
from customerkey.cli.output import emit_list, emit_object
from customerkey.views.files import site_policy_view, site_view

app = typer.Typer(help="Sites: https://<tenant>.sharepoint.local/sites/<name>.")

SITE_COLUMNS = ["Url", "Title", "Files", "Encryption"]
_TENANT = typer.Option(None, "--tenant")


@app.command("create")
def site_create(
    ctx: typer.Context,
    url: str,
    title: str | None = typer.Option(None, "--title", help="Default: the site's name."),
) -> None:
    """A new site; under the tenant's TIK when a files policy is registered."""
    c = cli_context(ctx)
    emit_object(
        site_view(c.runtime.files.create_site(c.actor, url, title=title)), as_json=c.as_json
    )


@app.command("list")
def site_list(ctx: typer.Context, tenant: str | None = _TENANT) -> None:
    """The tenant's sites and how each is encrypted."""
    c = cli_context(ctx)
    found = c.runtime.files.list_sites(c.actor, tenant_of(c, tenant))
    emit_list([site_view(s) for s in found], SITE_COLUMNS, as_json=c.as_json)


@app.command("show")
def site_show(ctx: typer.Context, url: str) -> None:
    """One site: title, template, file count, encryption and key generation."""
    c = cli_context(ctx)
    emit_object(site_view(c.runtime.files.get_site(c.actor, url)), as_json=c.as_json)


@app.command("status")
def site_status(ctx: typer.Context, url: str) -> None:
    """Get-SPOSiteDataEncryptionPolicy: one site's State."""
    c = cli_context(ctx)
    emit_object(site_policy_view(c.runtime.files.site_status(c.actor, url)), as_json=c.as_json)
