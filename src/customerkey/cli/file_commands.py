"""``customerkey file ...``: files in sites, streamed in and out with a progress bar whatever
their size; versions and the recycle bin."""

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

from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import CliContext, cli_context
from customerkey.cli.output import emit_list, emit_message, emit_object, err_console
from customerkey.errors import BadParameter
from customerkey.views.files import file_view, version_view

app = typer.Typer(help="Files in sites: streamed in and out, versions, recycle bin.")

FILE_COLUMNS = ["Path", "Size", "Version", "Versions", "Modified"]
RECYCLED_COLUMNS = ["Path", "Size", "Versions", "DeletedBy", "Deleted", "FileId"]
VERSION_COLUMNS = ["Version", "Size", "Chunks", "IsCurrent", "CreatedBy", "Created"]


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


@app.command("put")
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


@app.command("get")
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
        data={"Path": str(target), "Version": got.number, "Size": got.size},
    )


@app.command("list")
def file_list(
    ctx: typer.Context,
    site: str,
    folder: str | None = typer.Option(
        None, "--folder", help="Only files under this folder, e.g. 'Shared Documents'."
    ),
    recycle_bin: bool = typer.Option(False, "--recycle-bin", help="The site's recycle bin."),
) -> None:
    """The files of a site (or of its recycle bin), with their current version."""
    c = cli_context(ctx)
    found = c.runtime.files.list_files(c.actor, site, folder=folder, recycle_bin=recycle_bin)
    columns = RECYCLED_COLUMNS if recycle_bin else FILE_COLUMNS
    emit_list([file_view(f) for f in found], columns, as_json=c.as_json)


@app.command("show")
def file_show(ctx: typer.Context, site: str, path: str) -> None:
    """One file: size, current version, how many versions, when it changed."""
    c = cli_context(ctx)
    emit_object(file_view(c.runtime.files.get_file(c.actor, site, path)), as_json=c.as_json)


@app.command("versions")
def file_versions(ctx: typer.Context, site: str, path: str) -> None:
    """Every version of a file, the current one marked."""
    c = cli_context(ctx)
    found = c.runtime.files.versions(c.actor, site, path)
    emit_list([version_view(v) for v in found], VERSION_COLUMNS, as_json=c.as_json)


@app.command("delete")
def file_delete(ctx: typer.Context, site: str, path: str) -> None:
    """Move a file, with its versions, to the site's recycle bin."""
    c = cli_context(ctx)
    emit_object(file_view(c.runtime.files.delete(c.actor, site, path)), as_json=c.as_json)


@app.command("restore")
def file_restore(
    ctx: typer.Context,
    site: str,
    path: str = typer.Argument(..., help="Path (the most recently deleted) or file id."),
) -> None:
    """Bring a file back from the recycle bin."""
    c = cli_context(ctx)
    emit_object(file_view(c.runtime.files.restore(c.actor, site, path)), as_json=c.as_json)


@app.command("purge")
def file_purge(
    ctx: typer.Context,
    site: str,
    path: str | None = typer.Argument(None, help="One recycled file (path or id); else all."),
    yes: bool = YES,
) -> None:
    """Empty the site's recycle bin: its files' keys and content are destroyed."""
    c = cli_context(ctx)
    what = f"recycled file '{path}'" if path else f"every recycled file of {site}"
    confirm_destruction(
        c,
        f"Purging {what}",
        path or site,
        yes=yes,
        consequence="their keys and content are destroyed, with no way back",
    )
    count = c.runtime.files.purge_recycled(c.actor, site, path)
    emit_message(
        f"Removed {count} file(s) from the recycle bin of {site}.",
        as_json=c.as_json,
        data={"Purged": count},
    )
