"""``customerkey jobs ...`` and ``customerkey worker``, plus running a job to completion.

With no live worker (the embedded default) a command that starts a job runs it here, in
this process, with a progress bar; with a worker running (``customerkey serve`` or
``customerkey worker``) it waits and shows the worker's progress instead. Both are
``customerkey.jobs.runner.run_or_wait``; this module draws the bar and says what Ctrl-C
leaves: a job run here is given back at once ("Stopped at N of M; ..."), a job a worker runs
goes on there. Either way the command exits 130, the shell's code for Ctrl-C, since it did
not see its work through.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from customerkey.cli.context import CliContext, cli_context
from customerkey.cli.output import (
    console,
    count_bar,
    emit_list,
    emit_message,
    emit_object,
    err_console,
)

if TYPE_CHECKING:
    from customerkey.jobs.queue import Job
    from customerkey.jobs.runner import JobsInterrupted

app = typer.Typer(help="Background jobs: list, show, wait for and cancel them.")

JOB_COLUMNS = ["Id", "Kind", "Target", "State", "PercentComplete", "Attempts", "Error"]
INTERRUPTED = 130  # exit code after Ctrl-C (128 + SIGINT), as shells report it

# What the next step is after Ctrl-C stopped a job run here: ``{id}`` is the job's id.
RESUME_WITH_JOBS_WAIT = (
    "run 'customerkey jobs wait {id}' to go on with it here (a worker also takes it up), or "
    "'customerkey jobs cancel {id}' to cancel it"
)


@contextmanager
def _one_interrupt() -> Iterator[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` once; a second press while the first is being
    handled (the job given back, the message printed) is ignored instead of cutting that
    short. Only where signals can be handled (the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _job_label(job: Job) -> str:
    return f"{job.kind} {job.target[:36]}"


def wait_for_jobs(
    c: CliContext,
    job_ids: list[str],
    *,
    timeout: float | None = None,
    what: str = "job",
    resume_hint: str = RESUME_WITH_JOBS_WAIT,
) -> list[Job]:
    """Run (no live worker) or watch (a worker holds them) until every job has finished,
    with a progress bar (``customerkey.jobs.runner.run_or_wait``). Ctrl-C prints what
    happens next to each unfinished job (``what`` names it, ``resume_hint`` says how to go
    on with one stopped here) and exits 130."""
    from customerkey.jobs.runner import JobsInterrupted, run_or_wait

    runtime = c.runtime
    try:
        with _one_interrupt(), count_bar("{task.description}", as_json=c.as_json) as bar:
            tasks = {}
            for job_id in job_ids:
                job = runtime.jobs.get(job_id)
                tasks[job_id] = bar.add_task(
                    _job_label(job), total=job.progress_total or None, completed=job.progress_done
                )

            def on_progress(job: Job, done: int, total: int) -> None:
                task = tasks.get(job.id)
                if task is not None:
                    bar.update(task, completed=done, total=total if total >= 0 else None)

            def on_poll(jobs: list[Job]) -> None:
                for job in jobs:
                    bar.update(
                        tasks[job.id],
                        completed=job.progress_done,
                        total=job.progress_total or (1 if job.finished else None),
                    )
                    if job.state == "succeeded" and not job.progress_total:
                        bar.update(tasks[job.id], completed=1, total=1)

            return run_or_wait(
                runtime, job_ids, on_progress=on_progress, on_poll=on_poll, timeout=timeout
            )
    except JobsInterrupted as interrupt:
        _report_interrupt(interrupt, what, resume_hint)
        raise typer.Exit(INTERRUPTED) from None


def _report_interrupt(interrupt: JobsInterrupted, what: str, resume_hint: str) -> None:
    """Say, on stderr, what Ctrl-C left each unfinished job doing."""
    for job in interrupt.jobs:
        follow = (
            f"follow it with 'customerkey jobs show {job.id}' or cancel it with "
            f"'customerkey jobs cancel {job.id}'"
        )
        if job.finished:
            continue
        if job.state in ("running", "cancelling") and not job.interrupted:
            line = f"The {what} continues in the worker (job {job.id}); {follow}."
        elif interrupt.worker_live:
            line = f"The {what} (job {job.id}) is queued and a worker takes it up; {follow}."
        else:
            line = (
                f"Stopped at {job.progress_done} of {job.progress_total}; "
                f"{resume_hint.format(id=job.id)}."
            )
        err_console.print(line, markup=False, highlight=False)


def finish_or_report(
    c: CliContext,
    job: Job | None,
    *,
    no_wait: bool,
    what: str = "job",
    resume_hint: str = RESUME_WITH_JOBS_WAIT,
) -> Job | None:
    """After a command queued ``job``: wait for it (or say how to), and report the end. With
    ``--no-wait`` people get a sentence; ``--json`` prints nothing here (the command's own
    output carries ``JobId``)."""
    from customerkey.jobs.queue import JobFailed

    if job is None:
        return None
    if no_wait:
        if not c.as_json:
            console.print(
                f"Started job {job.id} ({job.kind}); follow it with "
                f"'customerkey jobs wait {job.id}'.",
                markup=False,
            )
        return job
    (done,) = wait_for_jobs(c, [job.id], what=what, resume_hint=resume_hint)
    if done.state == "failed":
        raise JobFailed(f"Job {done.id} ({done.kind}) failed: {done.error}")
    return done


def job_view(job: Job) -> dict[str, Any]:
    from customerkey.views.mail import job_view as view

    return view(job)


def _visible(c: CliContext, jobs: list[Job]) -> list[Job]:
    from customerkey.jobs.visibility import visible_jobs

    return visible_jobs(c.actor, jobs)


@app.command("list")
def list_(
    ctx: typer.Context,
    state: str | None = typer.Option(
        None,
        "--state",
        help="Only jobs in this state: queued, running, interrupted (its holder is gone), "
        "cancelling, succeeded, failed or cancelled.",
    ),
    kind: str | None = typer.Option(
        None, "--kind", help="Only jobs of this kind (mailbox-import, mailbox-rekey, ...)."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
) -> None:
    """List background jobs, newest first (the ones you may see)."""
    c = cli_context(ctx)
    stored = "running" if state == "interrupted" else state
    jobs = c.runtime.jobs.list_jobs(states=[stored] if stored else None, kind=kind, limit=limit)
    if state is not None:
        jobs = [j for j in jobs if j.shown_state == state]
    emit_list([job_view(j) for j in _visible(c, jobs)], JOB_COLUMNS, as_json=c.as_json)


@app.command("show")
def show(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="The job's id."),
) -> None:
    """Show one job: state, progress, attempts, error."""
    from customerkey.jobs.visibility import check_readable

    c = cli_context(ctx)
    job = check_readable(c.actor, c.runtime.jobs.get(job_id))
    emit_object(job_view(job), as_json=c.as_json)


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_id: str | None = typer.Argument(None, help="The job's id (or --all)."),
    all_: bool = typer.Option(False, "--all", help="Every queued or running job."),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Give up after this many seconds."
    ),
) -> None:
    """Wait for jobs with a progress bar; with no live worker, run them here."""
    c = cli_context(ctx)
    if (job_id is None) == (not all_):
        raise typer.BadParameter("give a job id or --all")
    ids = (
        [job_id]
        if job_id
        else [
            j.id
            for j in c.runtime.jobs.list_jobs(
                states=["queued", "running", "cancelling"], limit=10_000
            )
        ]
    )
    jobs = wait_for_jobs(c, [i for i in ids if i], timeout=timeout)
    emit_list([job_view(j) for j in jobs], JOB_COLUMNS, as_json=c.as_json)
    if any(j.state == "failed" for j in jobs):
        raise typer.Exit(1)


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="The job's id."),
) -> None:
    """Cancel a job: a queued one at once, a running one after its current batch. Only kinds
    that stop with their data consistent may be cancelled (a mail import, a mailbox move or
    DEP change); others are refused."""
    from customerkey.jobs.cancel import cancel_job

    c = cli_context(ctx)
    runtime = c.runtime
    outcome = cancel_job(runtime.jobs, runtime.audit, runtime.job_kinds(), c.actor, job_id)
    job = outcome.job
    if outcome.stopped:
        message = f"Cancelled job {job.id} ({job.kind}) at {job.progress_done} of "
        message += f"{job.progress_total}."
    else:
        message = (
            f"Job {job.id} ({job.kind}) stops after its current batch (it is 'cancelling'; "
            f"'customerkey jobs show {job.id}' shows when it has)."
        )
    if outcome.note:
        message += f" {outcome.note}"
    emit_message(
        message,
        as_json=c.as_json,
        data={
            "JobId": job.id,
            "Kind": job.kind,
            "State": job.state,
            "Done": job.progress_done,
            "Total": job.progress_total,
        },
    )


def worker(
    ctx: typer.Context,
    poll: float = typer.Option(1.0, "--poll", help="Seconds between queue polls when idle."),
) -> None:
    """Run a standalone worker until SIGTERM/SIGINT (PostgreSQL: run as many as you like)."""
    from customerkey.server.supervisor import startup_sweep

    c = cli_context(ctx)
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    w = c.runtime.worker()
    err_console.print(f"worker {w.worker_id} started")
    startup_sweep(c.runtime)
    w.run_forever(stop, poll_seconds=poll)
    err_console.print(f"worker {w.worker_id} stopped")
