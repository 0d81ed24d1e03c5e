"""``customerkey audit ...``: read and verify the hash-chained audit log."""

from __future__ import annotations

import typer

from customerkey.cli.context import cli_context
from customerkey.cli.output import console, emit_list, emit_object
from customerkey.views.vault import audit_view

app = typer.Typer(help="The hash-chained audit log.")


@app.command("show")
def audit_show(
    ctx: typer.Context,
    vault: str | None = typer.Option(None, "--vault"),
    operation: str | None = typer.Option(None, "--operation"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """The newest audit records (all of them with --json and a large --limit). A tenant admin
    sees its tenant's records, a grantee its own, as through GET /api/v1/audit."""
    c = cli_context(ctx)
    records = c.runtime.audit_log.newest(c.actor, vault=vault, operation=operation, limit=limit)
    views = [audit_view(r) for r in records]
    emit_list(
        views,
        ["Seq", "Time", "Principal", "Operation", "Result", "Vault", "Key", "Version"],
        as_json=c.as_json,
    )


@app.command("verify")
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
