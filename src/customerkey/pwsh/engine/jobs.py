"""The jobs a cmdlet starts (a DEP refresh, a move request, a DEP change on a mailbox with
content, a SharePoint registration or key roll): run here to completion when no worker is live
and waited for when one is (``customerkey.jobs.runner.run_or_wait``, as the CLI commands do),
with PowerShell's progress display on a terminal meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from customerkey.errors import CustomerKeyError
from customerkey.jobs.queue import Job
from customerkey.jobs.runner import JobHost, ProgressFn, run_or_wait


def run_jobs(
    host: JobHost,
    jobs: Sequence[Job],
    activity: str,
    *,
    err: TextIO,
    on_progress: ProgressFn | None = None,
) -> list[Job]:
    """Run ``jobs`` here (no live worker) or wait for the worker running them, showing
    ``activity``'s progress on ``err``; ``on_progress`` is told every committed step of a job
    run here. A job that failed raises its error."""
    progress = _Progress(err, activity)

    def step(job: Job, done: int, total: int) -> None:
        progress.update(done, total)
        if on_progress is not None:
            on_progress(job, done, total)

    try:
        finished = run_or_wait(host, [j.id for j in jobs], on_progress=step)
    finally:
        progress.close()
    for job in finished:
        if job.state == "failed":
            raise CustomerKeyError(f"Job {job.id} ({job.kind}) failed: {job.error}")
    return finished


class _Progress:
    """PowerShell's progress display for a long operation: on a terminal only, and gone
    when it ends (it is not output)."""

    def __init__(self, stream: TextIO, activity: str) -> None:
        self._bar: Any = None
        self._task: Any = None
        isatty = getattr(stream, "isatty", None)
        if not (callable(isatty) and isatty()):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(
            TextColumn(activity),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(file=stream),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(activity, total=None)

    def update(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total if total >= 0 else None)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
