"""``customerkey storage ...``: operator commands on the blob store under the home folder.

``storage sweep`` removes blob files no row references (left behind by writers killed
between storing a blob and committing its row) once they are older than the grace
(``CUSTOMERKEY_BLOB_SWEEP_GRACE_SECONDS``), and dead writers' staging files; ``--dry-run``
only reports what it would remove. Operators only. The same sweep runs once as
``customerkey worker`` and the job worker of ``customerkey serve`` start
(``server.supervisor.startup_sweep``).
"""

from __future__ import annotations

from typing import Any

import typer

from customerkey.cli.context import cli_context
from customerkey.cli.output import console, count_bar, emit_object
from customerkey.jobs.blob_sweep import SweepReport

app = typer.Typer(help="The blob store: sweep orphaned blobs.")

# Names printed in a table; --json prints every name the report kept.
SHOWN_NAMES = 20


def sweep_view(report: SweepReport) -> dict[str, Any]:
    return {
        "DryRun": report.dry_run,
        "Cutoff": report.cutoff.isoformat(),
        "Folders": report.folders,
        "Blobs": report.blobs,
        "Recent": report.recent,
        "OrphanBlobs": report.orphans,
        "OrphanBytes": report.orphan_bytes,
        "TempFiles": report.temp_files,
        "TempBytes": report.temp_bytes,
        "BytesReclaimed": report.bytes_reclaimed,
        "Unknown": report.unknown,
        "Removed": list(report.removed),
        "RemovedListComplete": report.listed_all,
    }


@app.command("sweep")
def sweep(
    ctx: typer.Context,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only report what would be removed; remove nothing."
    ),
) -> None:
    """Remove unreferenced blobs older than the grace, and dead writers' staging files."""
    c = cli_context(ctx)
    sweeper = c.runtime.blob_sweeper
    bar = count_bar("sweeping blob folders", as_json=c.as_json)
    task = bar.add_task("sweep", total=None)

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        report = sweeper.sweep(c.actor, dry_run=dry_run, progress=progress)
    finally:
        bar.stop()
    view = sweep_view(report)
    if c.as_json:
        emit_object(view, as_json=True)
        return
    names = view.pop("Removed")
    view.pop("RemovedListComplete")
    emit_object(view, as_json=False)
    verb = "Would remove" if report.dry_run else "Removed"
    count = report.orphans + report.temp_files
    if not count:
        console.print("Nothing to remove.")
        return
    console.print(f"{verb} {count} file(s), {report.bytes_reclaimed} bytes:")
    for name in names[:SHOWN_NAMES]:
        console.print(f"  {name}", markup=False)
    if count > SHOWN_NAMES:
        console.print(f"  ... and {count - SHOWN_NAMES} more")
