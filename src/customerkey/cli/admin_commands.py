"""``customerkey principal ...`` and ``customerkey audit ...``."""

from __future__ import annotations

import typer

from customerkey.cli.context import cli_context, split_list
from customerkey.cli.output import console, emit_list, emit_object
from customerkey.errors import BadParameter
from customerkey.views import audit_view, principal_view

principals = typer.Typer(help="Users and service principals that can sign in.")
audit = typer.Typer(help="The hash-chained audit log.")


@principals.command("create")
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


@principals.command("list")
def principal_list(ctx: typer.Context, tenant: str | None = typer.Option(None, "--tenant")) -> None:
    c = cli_context(ctx)
    views = [
        principal_view(p) for p in c.runtime.principals.list_principals(c.actor, tenant=tenant)
    ]
    emit_list(
        views,
        ["Id", "Kind", "Tenant", "DisplayName", "Roles", "Enabled", "HasSecret"],
        as_json=c.as_json,
    )


@principals.command("reset-secret")
def principal_reset_secret(ctx: typer.Context, principal_id: str) -> None:
    """Issue a new client secret; tokens issued before stop working at once."""
    c = cli_context(ctx)
    secret = c.runtime.principals.reset_secret(c.actor, principal_id)
    principal = c.runtime.principals.show(c.actor, principal_id)
    emit_object({"Id": principal.id, "ClientSecret": secret}, as_json=c.as_json)


@principals.command("show")
def principal_show(ctx: typer.Context, principal_id: str) -> None:
    """One principal, by UPN, application id or object id."""
    c = cli_context(ctx)
    emit_object(principal_view(c.runtime.principals.show(c.actor, principal_id)), as_json=c.as_json)


@principals.command("disable")
def principal_disable(ctx: typer.Context, principal_id: str) -> None:
    """Stop a principal signing in; its tokens stop working at once."""
    c = cli_context(ctx)
    principal = c.runtime.principals.set_enabled(c.actor, principal_id, False)
    emit_object(principal_view(principal), as_json=c.as_json)


@principals.command("enable")
def principal_enable(ctx: typer.Context, principal_id: str) -> None:
    """Let a disabled principal sign in again (its old tokens stay ended)."""
    c = cli_context(ctx)
    principal = c.runtime.principals.set_enabled(c.actor, principal_id, True)
    emit_object(principal_view(principal), as_json=c.as_json)


@principals.command("delete")
def principal_delete(
    ctx: typer.Context,
    principal_id: str,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Delete a principal and every vault access policy naming it; its tokens stop working."""
    c = cli_context(ctx)
    principal = c.runtime.principals.show(c.actor, principal_id)
    if not yes and not typer.confirm(
        f"Delete '{principal.id}' and remove its access to every vault?", default=False
    ):
        raise typer.Exit(1)
    gone = c.runtime.principals.delete(c.actor, principal_id)
    emit_object(principal_view(gone), as_json=c.as_json)


@principals.command("roles")
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


@audit.command("show")
def audit_show(
    ctx: typer.Context,
    vault: str | None = typer.Option(None, "--vault"),
    operation: str | None = typer.Option(None, "--operation"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """The newest audit records (all of them with --json and a large --limit). A tenant admin
    sees its tenant's records, a grantee its own, as through GET /api/v1/audit."""
    c = cli_context(ctx)
    records = c.runtime.audit_log.records(
        c.actor, vault=vault, operation=operation, limit=limit, newest_first=True
    )
    views = [audit_view(r) for r in reversed(records)]
    emit_list(
        views,
        ["Seq", "Time", "Principal", "Operation", "Result", "Vault", "Key", "Version"],
        as_json=c.as_json,
    )


@audit.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the hash chain: detects edited, deleted, inserted or reordered records."""
    c = cli_context(ctx)
    result = c.runtime.audit_log.verify(c.actor)
    if c.as_json:
        emit_object(
            {"ok": result.ok, "records": result.records, "problems": list(result.problems)},
            as_json=True,
        )
    elif result.ok:
        console.print(f"Audit log intact: {result.records} records, chain verified.")
    else:
        console.print(f"[red]Audit log damaged[/red] ({result.records} records):")
        for problem in result.problems:
            console.print(f"  - {problem}")
    if not result.ok:
        raise typer.Exit(1)
