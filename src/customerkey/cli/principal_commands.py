"""``customerkey principal ...``: users and service principals that can sign in."""

from __future__ import annotations

import typer

from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import cli_context, split_list
from customerkey.cli.output import console, emit_list, emit_object
from customerkey.errors import BadParameter
from customerkey.views.vault import principal_view

app = typer.Typer(help="Users and service principals that can sign in.")


@app.command("create")
def principal_create(
    ctx: typer.Context,
    principal_id: str | None = typer.Argument(
        None,
        help="A user's UPN (its domain is the tenant's mail domain). Service principals get "
        "an application id from the platform; only the operator may give one.",
    ),
    service: bool = typer.Option(False, "--service", help="A service principal, not a user."),
    tenant: str | None = typer.Option(None, "--tenant"),
    display_name: str | None = typer.Option(None, "--display-name"),
    roles: str | None = typer.Option(
        None, "--roles", help="Comma-separated: operator, tenant-admin, purge-approver."
    ),
    no_secret: bool = typer.Option(False, "--no-secret", help="Do not issue a client secret."),
) -> None:
    """Create a principal. Its client secret is printed once and stored only hashed."""
    c = cli_context(ctx)
    if principal_id is None and not service:
        raise BadParameter("Give the user's UPN.")
    principal, secret = c.runtime.principals.create(
        c.actor,
        principal_id,
        kind="service" if service else "user",
        tenant=tenant,
        display_name=display_name,
        roles=split_list(roles) or [],
        with_secret=not no_secret,
    )
    view = principal_view(principal)
    if secret is not None:
        view["ClientSecret"] = secret
    emit_object(view, as_json=c.as_json)
    if secret is not None and not c.as_json:
        console.print("[yellow]Store the client secret now; it is not shown again.[/yellow]")


@app.command("list")
def principal_list(ctx: typer.Context, tenant: str | None = typer.Option(None, "--tenant")) -> None:
    """The principals you may see: every tenant's for the operator, your own tenant's otherwise."""
    c = cli_context(ctx)
    views = [
        principal_view(p) for p in c.runtime.principals.list_principals(c.actor, tenant=tenant)
    ]
    emit_list(
        views,
        ["Id", "Kind", "Tenant", "DisplayName", "Roles", "Enabled", "HasSecret"],
        as_json=c.as_json,
    )


@app.command("reset-secret")
def principal_reset_secret(ctx: typer.Context, principal_id: str) -> None:
    """Issue a new client secret; tokens issued before stop working at once."""
    c = cli_context(ctx)
    secret = c.runtime.principals.reset_secret(c.actor, principal_id)
    principal = c.runtime.principals.show(c.actor, principal_id)
    emit_object({"Id": principal.id, "ClientSecret": secret}, as_json=c.as_json)


@app.command("show")
def principal_show(ctx: typer.Context, principal_id: str) -> None:
    """One principal, by UPN, application id or object id."""
    c = cli_context(ctx)
    emit_object(principal_view(c.runtime.principals.show(c.actor, principal_id)), as_json=c.as_json)


@app.command("disable")
def principal_disable(ctx: typer.Context, principal_id: str) -> None:
    """Stop a principal signing in; its tokens stop working at once."""
    c = cli_context(ctx)
    principal = c.runtime.principals.set_enabled(c.actor, principal_id, False)
    emit_object(principal_view(principal), as_json=c.as_json)


@app.command("enable")
def principal_enable(ctx: typer.Context, principal_id: str) -> None:
    """Let a disabled principal sign in again (its old tokens stay ended)."""
    c = cli_context(ctx)
    principal = c.runtime.principals.set_enabled(c.actor, principal_id, True)
    emit_object(principal_view(principal), as_json=c.as_json)


@app.command("delete")
def principal_delete(
    ctx: typer.Context,
    principal_id: str,
    yes: bool = YES,
) -> None:
    """Delete a principal and every vault access policy naming it; its tokens stop working."""
    c = cli_context(ctx)
    principal = c.runtime.principals.show(c.actor, principal_id)
    confirm_destruction(
        c,
        f"Deleting principal '{principal.id}'",
        principal.id,
        yes=yes,
        consequence="its access to every vault is removed and its tokens stop working",
    )
    gone = c.runtime.principals.delete(c.actor, principal_id)
    emit_object(principal_view(gone), as_json=c.as_json)


@app.command("roles")
def principal_roles(
    ctx: typer.Context,
    principal_id: str,
    add: str | None = typer.Option(None, "--add", help="Roles to grant, comma-separated."),
    remove: str | None = typer.Option(None, "--remove", help="Roles to take away."),
) -> None:
    """Grant or remove roles (operator, tenant-admin, purge-approver). Removing one ends the
    principal's tokens. Only the operator grants operator and purge-approver."""
    c = cli_context(ctx)
    principal = c.runtime.principals.change_roles(
        c.actor, principal_id, add=split_list(add) or [], remove=split_list(remove) or []
    )
    emit_object(principal_view(principal), as_json=c.as_json)
