"""``customerkey tenant ...``: the tenants of the service (operator only)."""

from __future__ import annotations

import typer

from customerkey.cli.context import cli_context
from customerkey.cli.output import emit_list, emit_object
from customerkey.views.mail import tenant_view

app = typer.Typer(help="Tenants of the service (operator only).")


@app.command("create")
def tenant_create(
    ctx: typer.Context,
    name: str,
    mail_domain: str = typer.Option(..., "--mail-domain", help="e.g. contoso.com"),
    display_name: str | None = typer.Option(None, "--display-name"),
) -> None:
    """Create a tenant whose users' UPNs and mailboxes are in its mail domain."""
    c = cli_context(ctx)
    tenant = c.runtime.tenants.create(
        c.actor, name, mail_domain=mail_domain, display_name=display_name
    )
    emit_object(tenant_view(tenant), as_json=c.as_json)


@app.command("show")
def tenant_show(ctx: typer.Context, name: str) -> None:
    """One tenant: its name, display name and mail domain."""
    c = cli_context(ctx)
    emit_object(tenant_view(c.runtime.tenants.get(name)), as_json=c.as_json)


@app.command("list")
def tenant_list(ctx: typer.Context) -> None:
    """The tenants you may see: every one for the operator, your own otherwise."""
    c = cli_context(ctx)
    emit_list(
        [tenant_view(t) for t in c.runtime.tenants.visible(c.actor)],
        ["Name", "DisplayName", "MailDomain"],
        as_json=c.as_json,
    )
