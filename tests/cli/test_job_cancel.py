"""Ctrl-C during ``customerkey mailbox import`` and ``customerkey jobs cancel``.

Ctrl-C says what happens next and gives a job run here back at once (no wait for its lease);
with a worker running it, the import goes on there and the message says so. A job whose
holder was killed is listed as ``interrupted``, not ``running``. Cancelling stops an import
after a committed batch, keeping what it imported (the same command goes on from there), and
stops a move with every item readable; kinds that cannot stop part-way are refused, and only
whoever may see a job may cancel it.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from customerkey.config import load_settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail.jobs import REFRESH_JOB
from tests.cli.conftest import Cli
from tests.support.mail_cli import (
    import_progress,
    jobs,
    spawn,
    wait_until,
    write_envelope_mbox,
)

UPN = "alice@contoso.com"
SMALL_BATCHES = {"CUSTOMERKEY_IMPORT_BATCH": "5"}


@pytest.fixture
def mailbox(cli: Cli) -> str:
    cli.ok("init")
    cli.ok("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    cli.ok("mailbox", "create", UPN)
    return UPN


def _item_count(cli: Cli) -> int:
    return int(cli.json("mailbox", "stats", UPN)["ItemCount"])


def _audit_operations(home: Path) -> list[str]:
    with sqlite3.connect(home / "customerkey.db") as conn:
        return [row[0] for row in conn.execute("SELECT operation FROM audit_records")]


def test_ctrl_c_stops_an_import_run_here_gives_it_back_at_once_and_says_how_to_resume(
    cli: Cli, mailbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "big.mbox"
    write_envelope_mbox(store, 300)
    command = spawn(cli.home, "mailbox", "import", UPN, str(store), env=SMALL_BATCHES)
    wait_until(lambda: import_progress(cli.home) >= 5, "a batch is committed", process=command)
    command.send_signal(signal.SIGINT)
    _, err = command.communicate(timeout=60)
    stderr = err.decode()

    assert command.returncode == 130, stderr
    (job,) = jobs(cli.home)
    done = job["progress_done"]
    assert 0 < done < 300
    assert f"Stopped at {done} of 300; run the same command to resume (the import continues " in (
        " ".join(stderr.split())
    )
    assert "Traceback" not in stderr
    # given back at once: queued, no lease, not shown as running
    assert (job["state"], job["lease_owner"]) == ("queued", None)
    assert cli.json("jobs", "show", job["id"])["State"] == "queued"
    # what was committed is there, once: whole batches only
    assert _item_count(cli) == done and done % 5 == 0

    # the same command goes on from there, at once, and never stores a message twice
    monkeypatch.setenv("CUSTOMERKEY_IMPORT_BATCH", "100")
    result = cli.json("mailbox", "import", UPN, str(store))
    assert result["Imported"] == 300 and result["JobId"] == job["id"]
    assert _item_count(cli) == 300


def test_a_killed_holder_is_listed_as_interrupted_not_running(
    cli: Cli, mailbox: str, tmp_path: Path
) -> None:
    store = tmp_path / "big.mbox"
    write_envelope_mbox(store, 300)
    command = spawn(cli.home, "mailbox", "import", UPN, str(store), env=SMALL_BATCHES)
    wait_until(lambda: import_progress(cli.home) >= 5, "a batch is committed", process=command)
    command.kill()
    command.wait(timeout=30)

    (listed,) = cli.json("jobs", "list")
    assert listed["State"] == "interrupted"
    assert [j["Id"] for j in cli.json("jobs", "list", "--state", "interrupted")] == [listed["Id"]]
    assert cli.json("jobs", "list", "--state", "running") == []


def test_ctrl_c_with_a_worker_says_the_import_goes_on_there_and_cancel_stops_it(
    cli: Cli, mailbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "big.mbox"
    write_envelope_mbox(store, 600)
    worker = spawn(cli.home, "worker", "--poll", "0.05", env=SMALL_BATCHES)
    try:
        wait_until(
            lambda: bool(cli.json("jobs", "list") == [] and _workers(cli.home)),
            "the worker is announced",
            process=worker,
        )
        command = spawn(cli.home, "mailbox", "import", UPN, str(store), env=SMALL_BATCHES)
        wait_until(lambda: import_progress(cli.home) >= 5, "the worker imports", process=command)
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=60)
        stderr = " ".join(err.decode().split())
        (job,) = jobs(cli.home)
        assert command.returncode == 130, stderr
        assert (
            f"The import continues in the worker (job {job['id']}); follow it with "
            f"'customerkey jobs show {job['id']}' or cancel it with "
            f"'customerkey jobs cancel {job['id']}'."
        ) in stderr

        cancelled = cli.json("jobs", "cancel", job["id"])
        assert cancelled["State"] in ("cancelling", "cancelled"), cancelled
        assert cancelled["JobId"] == job["id"]
        wait_until(
            lambda: jobs(cli.home)[0]["state"] == "cancelled", "the worker stops", process=worker
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    (stopped,) = jobs(cli.home)
    done = stopped["progress_done"]
    assert 0 < done < 600, stopped
    assert _item_count(cli) == done  # what it imported stays: whole batches, once
    assert "JobCancel" in _audit_operations(cli.home)

    # the same command goes on from where the cancelled import stopped
    monkeypatch.setenv("CUSTOMERKEY_IMPORT_BATCH", "200")
    again = cli.json("mailbox", "import", UPN, str(store))
    assert again["Imported"] == 600 and again["JobId"] == job["id"]
    assert _item_count(cli) == 600


def _workers(home: Path) -> list[Any]:
    with sqlite3.connect(home / "customerkey.db") as conn:
        return conn.execute("SELECT id FROM workers").fetchall()


def test_a_queued_import_is_cancelled_at_once_and_no_wait_prints_its_id(
    cli: Cli, mailbox: str, tmp_path: Path
) -> None:
    store = tmp_path / "a.mbox"
    write_envelope_mbox(store, 7)
    queued = cli.json("mailbox", "import", UPN, str(store), "--no-wait")
    job_id = queued["JobId"]
    assert queued["State"] == "queued"
    cancelled = cli.json("jobs", "cancel", job_id)
    assert cancelled["State"] == "cancelled"
    assert cli.json("jobs", "show", job_id)["State"] == "cancelled"
    assert _item_count(cli) == 0
    # a finished job cannot be cancelled again
    assert "already cancelled" in cli.fail("jobs", "cancel", job_id, error="JobNotCancellable")
    # and starting the import again takes it up where it stopped (here: the start)
    assert cli.json("mailbox", "import", UPN, str(store))["Imported"] == 7


def test_cancel_refuses_kinds_that_cannot_stop_part_way_and_other_peoples_jobs(
    cli: Cli, mailbox: str, tmp_path: Path
) -> None:
    rt = Runtime.open(load_settings(home=cli.home))
    try:
        with rt.db.transaction() as session:
            refresh = rt.jobs.enqueue(session, REFRESH_JOB, "some-dep", created_by=OPERATOR)
    finally:
        rt.close()
    error = cli.fail("jobs", "cancel", refresh.id, error="JobNotCancellable")
    assert f"Jobs of kind '{REFRESH_JOB}' cannot be cancelled" in error
    assert cli.json("jobs", "show", refresh.id)["State"] == "queued"

    store = tmp_path / "a.mbox"
    write_envelope_mbox(store, 3)
    cli.create_principal("eve@contoso.com")
    job_id = cli.json("mailbox", "import", UPN, str(store), "--no-wait")["JobId"]
    cli.fail("jobs", "cancel", job_id, error="Forbidden", as_principal="eve@contoso.com")
    assert cli.json("jobs", "show", job_id)["State"] == "queued"
    assert "JobCancel" not in _audit_operations(cli.home)
    cli.fail("jobs", "cancel", "no-such-job", error="JobNotFound")


def test_a_cancelled_move_leaves_every_item_readable_and_moving_again_finishes_it(
    cli: Cli, mailbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "a.mbox"
    entries = write_envelope_mbox(store, 120)
    cli.json("mailbox", "import", UPN, str(store))
    monkeypatch.setenv("CUSTOMERKEY_REKEY_BATCH", "2")
    move = cli.json("mailbox", "move", UPN, "--no-wait")
    job_id = move["JobId"]

    # A worker in this process runs the move; cancel it once it has moved some items.
    rt = Runtime.open(load_settings(home=cli.home))
    try:
        worker = rt.worker()
        thread = threading.Thread(target=worker.run_one)
        thread.start()
        try:
            wait_until(lambda: rt.jobs.get(job_id).progress_done >= 2, "items are moved")
            cli.json("jobs", "cancel", job_id)
        finally:
            thread.join(timeout=120)
        stopped = rt.jobs.get(job_id)
        assert stopped.state == "cancelled", stopped
        assert 0 < stopped.progress_done < 120
        status = cli.json("mailbox", "move-status", UPN)
        assert status["Status"] == "Suspended"
        # every item opens, under whichever key seals it
        got = [data for _, data in rt.mail.iter_messages(OPERATOR, UPN)]
        assert got == [message for _, message in entries]
        keys = {item.key_id for item in rt.mail.list_items(OPERATOR, UPN)}
        assert len(keys) == 2  # part moved, part not
    finally:
        rt.close()

    monkeypatch.setenv("CUSTOMERKEY_REKEY_BATCH", "100")
    assert cli.json("mailbox", "move", UPN)["Status"] == "Completed"
    rt = Runtime.open(load_settings(home=cli.home))
    try:
        assert len({item.key_id for item in rt.mail.list_items(OPERATOR, UPN)}) == 1
        got = [data for _, data in rt.mail.iter_messages(OPERATOR, UPN)]
        assert got == [message for _, message in entries]
    finally:
        rt.close()
