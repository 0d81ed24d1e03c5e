"""The guided demo (``customerkey demo``): the Customer Key story of the seed document, played
in a fresh home folder (issue 7).

Each step says what it does, prints the PowerShell lines it runs and their output, and then
checks the effect the document describes (not only that the command ran): that the new key
version wraps the refreshed DEP, that the mailbox's DataEncryptionPolicyID changed, that a
revoked workload can no longer read. The lines run through the cmdlet shell
(``Session.run``, what ``customerkey ps`` runs). What is no cmdlet (onboarding the tenant,
migrating a mailbox from an mbox file, creating SharePoint sites and files, reading content
back) calls the services directly and says so. A summary table ends the run; the exit code is
1 when any step did not behave as the document says.

The story: two vaults in two regions and subscriptions; an HSM key in each, limited to
wrapKey/unwrapKey, and backed up; Exchange Online and SharePoint Online granted; a mailbox
DEP; a mail user assigned the DEP before its mailbox is migrated; the statistics; a key roll
(-NotBefore), Set-DataEncryptionPolicy -Refresh and the DEP id changing; the files DEP
registered and rolled (Rolling with its percent, one roll at a time); a lost key restored from
its backup; Exchange Online's access removed (reads fail) and given back (reads work).

The pieces: ``scenario`` (the Contoso names), ``narrator`` (running, narrating and checking a
step), ``story`` (the chapters); this module prepares the home folder and plays the story
(``play``). The Typer command is ``customerkey.cli.demo_command``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from customerkey.config import Settings
from customerkey.demo.narrator import Check, Demo
from customerkey.demo.story import STORY
from customerkey.errors import BadParameter
from customerkey.runtime import Runtime


def summary(checks: list[Check]) -> Table:
    table = Table(title="What the document says, and what happened", show_lines=False)
    for column in ("Step", "Cmdlet", "Expected", "Observed", "OK"):
        table.add_column(column, overflow="fold")
    for number, check in enumerate(checks, start=1):
        table.add_row(
            f"{number}. {check.step}",
            check.cmdlet,
            check.expected,
            check.observed,
            "[green]ok[/]" if check.ok else "[bold red]FAIL[/]",
        )
    return table


def prepare_home(home: Path | None, force: bool) -> Path:
    """A fresh, empty home folder: a new temporary one, or ``home`` when it is new or empty
    (with ``force``, an existing customerkey home is wiped first)."""
    if home is None:
        return Path(tempfile.mkdtemp(prefix="customerkey-demo-"))
    home = home.expanduser()
    if home.exists() and not home.is_dir():
        raise BadParameter(f"{home} is not a folder.")
    if home.exists() and any(home.iterdir()):
        if not force:
            raise BadParameter(
                f"{home} is not empty; the demo needs a fresh home. Name a new or empty folder, "
                "or add --force to wipe a customerkey home there first."
            )
        if not (home / "master.key").exists():
            raise BadParameter(
                f"{home} is not empty and is not a customerkey home; --force wipes only a "
                "customerkey home. Name a new or empty folder."
            )
        shutil.rmtree(home)
    return home


def play(folder: Path, console: Console) -> bool:
    """Play the story in ``folder`` (a fresh home), printing to ``console``; True when every
    step behaved as the document says."""
    work = folder / "work"
    # Its own SQLite database and vaults whatever the environment says; one site or mailbox
    # re-wrapped per transaction, so a key roll's progress can be watched.
    settings = Settings(home=folder, database_url=None, remote_vaults=[], refresh_batch=1)
    runtime = Runtime.open(settings)
    work.mkdir(exist_ok=True)
    story = Demo(runtime, work, console)
    try:
        console.print(
            f"[bold]customerkey demo[/]: Contoso's Customer Key, as the documentation tells it, "
            f"in {escape(str(folder))}",
            highlight=False,
        )
        for chapter in STORY:
            chapter(story)
    finally:
        runtime.close()
    console.print()
    console.print(summary(story.checks))
    failed = [c for c in story.checks if not c.ok]
    total = len(story.checks)
    if failed:
        console.print(
            f"[bold red]{len(failed)} of {total} steps did not behave as the document says.[/]"
        )
    else:
        console.print(f"[green]All {total} steps behaved as the document says.[/]")
    console.print(
        f"The demo's home folder is {escape(str(folder))}; look around with "
        f'customerkey --home {escape(str(folder))} ps "Get-AzKeyVault".',
        highlight=False,
    )
    return not failed
