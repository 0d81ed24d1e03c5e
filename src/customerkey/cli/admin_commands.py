"""``customerkey principal ...`` and ``customerkey audit ...``."""

from __future__ import annotations

import typer

from customerkey.cli.context import cli_context, split_list
from customerkey.cli.output import console, emit_list, emit_object
from customerkey.views import audit_view, principal_view

principals = typer.Typer(help="Users and service principals that can sign in.")
audit = typer.Typer(help="The hash-chained audit log.")


@principals.command("create")
def principal_create(
    ctx: typer.Context,
    principal_id: str = typer.Argument(..., help="A UPN (user) or an application id (service)."),
    service: bool = typer.Option(False, "--service", help="A service principal, not a user."),
    tenant: str | None = typer.Option(None, "--tenant"),
    display_name: str | None = typer.Option(None, "--display-name"),
    roles: str | None = typer.Option(None, "--roles", help="operator,tenant-admin"),
    no_secret: bool = typer.Option(False, "--no-secret", help="Do not issue a client secret."),
) -> None:
    """Create a principal. Its client secret is printed once and stored only hashed."""
    c = cli_context(ctx)
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
        views, ["Id", "Kind", "Tenant", "DisplayName", "Roles", "HasSecret"], as_json=c.as_json
    )


@principals.command("reset-secret")
def principal_reset_secret(ctx: typer.Context, principal_id: str) -> None:
    c = cli_context(ctx)
    secret = c.runtime.principals.reset_secret(c.actor, principal_id)
    emit_object({"Id": principal_id.lower(), "ClientSecret": secret}, as_json=c.as_json)


@audit.command("show")
def audit_show(
    ctx: typer.Context,
    vault: str | None = typer.Option(None, "--vault"),
    operation: str | None = typer.Option(None, "--operation"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """The newest audit records (all of them with --json and a large --limit). A tenant admin
    sees the records of the vaults it can see, as through GET /api/v1/audit."""
    c = cli_context(ctx)
    actor = c.actor
    visible: set[str] | None = None
    if not actor.is_operator and "tenant-admin" in actor.roles:
        # Soft-deleted vaults too: who deleted a vault is what its admin looks for.
        vaults = c.runtime.vault.list_vaults(actor) + c.runtime.vault.list_vaults(
            actor, deleted=True
        )
        visible = {v.name for v in vaults}
    records = c.runtime.audit_log.records(
        actor,
        vault=vault,
        operation=operation,
        # the service drops other vaults' records after its limit: filter first, then cut
        limit=None if visible is not None else limit,
        newest_first=True,
        visible_vaults=visible,
    )[:limit]
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
