"""``customerkey audit ...``: read, verify, checkpoint and export the chained audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from customerkey.audit.chain import fields
from customerkey.audit.log import AuditRecord
from customerkey.cli.context import cli_context
from customerkey.cli.output import console, emit_json, emit_list, emit_object
from customerkey.home import private_file
from customerkey.views.vault import audit_view, verification_view

app = typer.Typer(help="The chained audit log: show, verify, checkpoint, export.")


@app.command("show")
def audit_show(
    ctx: typer.Context,
    vault: str | None = typer.Option(None, "--vault", help="Only this vault's records."),
    operation: str | None = typer.Option(
        None, "--operation", help="Only this operation, e.g. KeyCreate."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="How many records, newest first."),
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
def audit_verify(
    ctx: typer.Context,
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="Signed checkpoints (a file the file sink wrote, or one saved from syslog or the "
        "webhook): the chain must still hold each one's record with that hash.",
        exists=True,
        dir_okay=False,
    ),
) -> None:
    """Check the chain: detects edited, deleted, inserted, reordered or downgraded records; with
    --checkpoint also records cut off the end and a chain rewritten since the checkpoint."""
    c = cli_context(ctx)
    result = c.runtime.audit_log.verify(c.actor, checkpoint_file=checkpoint)
    if c.as_json:
        emit_object(verification_view(result), as_json=True)
    elif result.ok:
        console.print(f"Audit log intact: {result.records} records, chain verified.")
        if result.legacy:
            console.print(
                f"  {result.legacy} record(s) from before the keyed chain are plain SHA-256: "
                "only a checkpoint taken since proves they were not rewritten."
            )
        if checkpoint is not None:
            console.print(f"  {result.checkpoints} signed checkpoint(s) found in the chain.")
    else:
        console.print(f"[red]Audit log damaged[/red] ({result.records} records):")
        for problem in result.problems:
            console.print(f"  - {problem}")
    if not result.ok:
        raise typer.Exit(1)


@app.command("checkpoint")
def audit_checkpoint(ctx: typer.Context) -> None:
    """Sign a checkpoint of the chain's head now and write it to every sink (the checkpoint
    file, and syslog and the webhook when configured). Fails, naming the sink, when one
    cannot be written; key operations are then refused until one succeeds."""
    c = cli_context(ctx)
    checkpoint = c.runtime.audit_log.checkpoint(c.actor)
    if c.as_json:
        emit_json(json.loads(checkpoint.to_json()))
    else:
        console.print(
            f"Checkpoint of record {checkpoint.seq} (head {checkpoint.head}) signed with key "
            f"{checkpoint.key_id} and written to every sink."
        )


@app.command("public-key")
def audit_public_key(ctx: typer.Context) -> None:
    """The public key that signs checkpoints (PEM): give it to whoever keeps them."""
    c = cli_context(ctx)
    pem = c.runtime.audit_log.public_key_pem()
    if c.as_json:
        key_id = c.runtime.checkpoints.signer.key_id
        emit_json({"KeyId": key_id, "PublicKeyPem": pem, "Algorithm": "Ed25519"})
    else:
        sys.stdout.write(pem)


def _line(record: AuditRecord) -> str:
    line = {**fields(record), "chain": record.chain, "prev_hash": record.prev_hash}
    line["hash"] = record.hash
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"


@app.command("export")
def audit_export(
    ctx: typer.Context,
    since: int = typer.Option(0, "--since", min=0, help="Only records after this number."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file (0600) instead of standard output."
    ),
) -> None:
    """Every record as JSON lines (one object per line, every field the hash covers plus
    chain, prev_hash and hash), the format SIEMs ingest; streamed. Visibility as for 'audit
    show': the operator gets everything."""
    c = cli_context(ctx)
    records = c.runtime.audit_log.export(c.actor, since_seq=since)
    if output is None:
        for record in records:
            sys.stdout.write(_line(record))
        sys.stdout.flush()
        return
    count = 0
    with private_file(output) as handle:
        for record in records:
            handle.write(_line(record).encode())
            count += 1
    if c.as_json:
        emit_json({"Records": count, "Path": str(output)})
    else:
        console.print(f"Exported {count} record(s) to {output}.")
