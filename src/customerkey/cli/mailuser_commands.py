"""``customerkey mailuser ...``: mail users, recipients not yet migrated (New-MailUser)."""

from __future__ import annotations

import typer

from customerkey.cli.context import cli_context, tenant_for_upn
from customerkey.cli.output import emit_object
from customerkey.views.mail import mailbox_view

app = typer.Typer(help="Mail users: recipients not yet migrated.")


@app.command("create")
def mailuser_create(
    ctx: typer.Context,
    upn: str,
    dep: str | None = typer.Option(None, "--dep", help="Assign a DEP before migration."),
    display_name: str | None = typer.Option(None, "--display-name"),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """New-MailUser (+ Set-MailUser -DataEncryptionPolicy)."""
    c = cli_context(ctx)
    mailbox = c.runtime.mail.create_mailbox(
        c.actor,
        tenant_for_upn(c, upn, tenant),
        upn,
        kind="mailuser",
        policy=dep,
        display_name=display_name,
    )
    emit_object(mailbox_view(mailbox), as_json=c.as_json)
