"""``customerkey jobs ...`` and ``customerkey worker``, plus running a job to completion.

With no live worker (the embedded default) a command that starts a job runs it here, in
this process, with a progress bar; with a worker running (``customerkey serve`` or
``customerkey worker``) it waits and shows the worker's progress instead. Both are
``customerkey.jobs.runner.run_or_wait``; this module only draws the bar.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from customerkey.cli.context import CliContext, cli_context
from customerkey.cli.output import console, count_bar, emit_list, emit_object, err_console
from customerkey.jobs.queue import Job, JobFailed
from customerkey.jobs.runner import run_or_wait
from customerkey.server.supervisor import startup_sweep
from customerkey.views.mail import job_view

app = typer.Typer(help="Background jobs: list, show, wait.")

JOB_COLUMNS = ["Id", "Kind", "Target", "State", "PercentComplete", "Attempts", "Error"]


def wait_for_jobs(c: CliContext, job_ids: list[str], *, timeout: float | None = None) -> list[Job]:
    """Run (no live worker) or watch (a worker holds them) until every job has finished,
    with a progress bar (``customerkey.jobs.runner.run_or_wait``)."""
    runtime = c.runtime
    with count_bar("{task.description}", as_json=c.as_json) as bar:
        tasks = {}
        for job_id in job_ids:
            job = runtime.jobs.get(job_id)
            tasks[job_id] = bar.add_task(
                f"{job.kind} {job.target[:36]}",
                total=job.progress_total or None,
                completed=job.progress_done,
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


def finish_or_report(c: CliContext, job: Job | None, *, no_wait: bool) -> Job | None:
    """After a command queued ``job``: wait for it (or say how to), and report the end."""
    if job is None:
        return None
    if no_wait:
        if not c.as_json:
            console.print(
                f"Started job {job.id} ({job.kind}); follow it with "
                f"'customerkey jobs wait {job.id}'."
            )
        return job
    (done,) = wait_for_jobs(c, [job.id])
    if done.state == "failed":
        raise JobFailed(f"Job {done.id} ({done.kind}) failed: {done.error}")
    return done


@app.command("list")
def list_(
    ctx: typer.Context,
    state: str | None = typer.Option(None, "--state", help="queued, running, succeeded, failed"),
    kind: str | None = typer.Option(None, "--kind"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    c = cli_context(ctx)
    jobs = c.runtime.jobs.list_jobs(states=[state] if state else None, kind=kind, limit=limit)
    emit_list([job_view(j) for j in jobs], JOB_COLUMNS, as_json=c.as_json)


@app.command("show")
def show(ctx: typer.Context, job_id: str) -> None:
    c = cli_context(ctx)
    emit_object(job_view(c.runtime.jobs.get(job_id)), as_json=c.as_json)


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_id: str | None = typer.Argument(None),
    all_: bool = typer.Option(False, "--all", help="Every queued or running job."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds."),
) -> None:
    """Wait for jobs with a progress bar; with no live worker, run them here."""
    c = cli_context(ctx)
    if (job_id is None) == (not all_):
        raise typer.BadParameter("give a job id or --all")
    ids = (
        [job_id]
        if job_id
        else [j.id for j in c.runtime.jobs.list_jobs(states=["queued", "running"], limit=10_000)]
    )
    jobs = wait_for_jobs(c, [i for i in ids if i], timeout=timeout)
    emit_list([job_view(j) for j in jobs], JOB_COLUMNS, as_json=c.as_json)
    if any(j.state == "failed" for j in jobs):
        raise typer.Exit(1)


def worker(
    ctx: typer.Context,
    poll: float = typer.Option(1.0, "--poll", help="Seconds between queue polls when idle."),
) -> None:
    """Run a standalone worker until SIGTERM/SIGINT (PostgreSQL: run as many as you like)."""
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
